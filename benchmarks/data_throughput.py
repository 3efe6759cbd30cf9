"""Examples/s of each data source against the tokens/s that training `configs/tiny.py` consumes.

    python benchmarks/data_throughput.py [--seconds=5]

prints one JSON object: per source, packed examples/s and tokens/s produced by the stream (after its
prefetch thread), and `headroom` = source tokens/s / training tokens/s (goal: >= 5). Text sources
read a corpus generated in a temporary directory, tokenized with the byte vocabulary and with a
SentencePiece model trained on it, so the benchmark runs offline.
"""

import json
import pathlib
import tempfile
import time

from absl import app
from absl import logging
from absl import flags

from cbs import data as data_lib
from cbs import metrics
from cbs import train
from cbs.data import train_vocab
from configs import tiny
from tests.data import corpus

_SECONDS = flags.DEFINE_float("seconds", 5.0, "Measuring time per source.")


def stream_rate(config, seconds: float) -> float:
  """Examples/s of a source's training stream, batches of config.batch.size, after warm-up."""
  stream = data_lib.make(config, 0, 1).train
  stream.next_batch(config.batch.size)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    stream.next_batch(config.batch.size)
    count += config.batch.size
  return count / (time.perf_counter() - start)


def training_rate(workdir: pathlib.Path) -> float:
  config = tiny.get_config()
  config.train_tokens = 300 * config.batch.size * config.data.seq_len
  config.eval.every_tokens = 0
  train.train_and_evaluate(config, str(workdir))
  return [r for r in metrics.read_records(workdir) if "tokens_per_sec" in r][-1]["tokens_per_sec"]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    files = corpus.write_jsonl(tmp, files=4, per_file=2000)
    spm = train_vocab.train(files, str(tmp / "spm"), vocab_size=500)
    tfds_name = corpus.prepare_tfds(tmp / "tfds", corpus.BenchText)
    consumed = training_rate(tmp / "run")
    results = {"train_tokens_per_sec_tiny": consumed, "sources": {}}
    variants = {
        "synthetic": {},
        "text_files_byte": dict(source="text_files", files=",".join(files)),
        "text_files_spm": dict(source="text_files", files=",".join(files), vocab=spm),
        "tfds_spm": dict(source="tfds", tfds_name=tfds_name, tfds_data_dir=str(tmp / "tfds"),
                         vocab=spm),
        "seqio_spm": dict(source="seqio", tfds_name=tfds_name,
                          tfds_data_dir=str(tmp / "tfds"), vocab=spm),
    }
    for name, overrides in variants.items():
      config = tiny.get_config()
      config.data.update(overrides)
      rate = stream_rate(config, _SECONDS.value)
      tokens = rate * config.data.seq_len
      results["sources"][name] = {"examples_per_sec": round(rate, 1),
                                  "tokens_per_sec": round(tokens),
                                  "headroom": round(tokens / consumed, 1)}
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
