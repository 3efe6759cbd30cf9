"""Examples/s of each data source against the tokens/s that training `configs/tiny.py` consumes.

    python benchmarks/data_throughput.py [--seconds=5]

prints one JSON object: per source, packed examples/s and tokens/s produced by the stream (after
grain's read-ahead), `headroom` = source tokens/s / training tokens/s (goal: >= 5), and the time
to restore a stream at two positions 10x apart. Text sources read a corpus generated in a
temporary directory - .jsonl and the same documents as .parquet, tokenized with the byte
vocabulary, a SentencePiece model and a Hugging Face BPE tokenizer trained on it, and prepared
ArrayRecord shards - so the benchmark runs offline.
"""

import json
import pathlib
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import tokenizers
from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the test corpus generator

from cbs import data as data_lib
from cbs import train
from cbs.data import prepare
from cbs.data import text_files
from cbs.data import train_vocab
from cbs.metrics import records
from configs import tiny
from tests.data import corpus

_SECONDS = flags.DEFINE_float("seconds", 5.0, "Measuring time per source.")


def stream_rate(config, seconds: float) -> tuple[float, list[float]]:
  """Examples/s of a source's training stream (batches of config.batch.size, after warm-up) and
  the seconds to restore a fresh stream at the positions after 1/10 and all of the measured
  batches, up to its first batch."""
  stream = data_lib.make(config, 0, 1).train
  stream.next_batch(config.batch.size)
  count, start = 0, time.perf_counter()
  states = []
  while time.perf_counter() - start < seconds or len(states) < 10:
    stream.next_batch(config.batch.size)
    count += config.batch.size
    if time.perf_counter() - start > seconds * (len(states) + 1) / 10:
      states.append(json.loads(json.dumps(stream.get_state())))
  rate = count / (time.perf_counter() - start)
  stream.close()
  restores = []
  for state in (states[0], states[-1]):
    fresh = data_lib.make(config, 0, 1).train
    begin = time.perf_counter()
    fresh.set_state(state)
    fresh.next_batch(config.batch.size)
    restores.append(time.perf_counter() - begin)
    fresh.close()
  return rate, restores


def hf_tokenizer(files: list[str], path: pathlib.Path) -> str:
  """A byte-level BPE tokenizer.json trained offline on the corpus."""
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=500,
    special_tokens=["<pad>", "<|endoftext|>", "<unk>"],
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tokenizer.train_from_iterator(
    text_files.read_documents(text_files.resolve(files), "text"), trainer
  )
  tokenizer.save(str(path))
  return str(path)


def as_parquet(files: list[str], directory: pathlib.Path) -> list[str]:
  directory.mkdir()
  out = []
  for path in files:
    texts = [json.loads(line)["text"] for line in open(path)]
    out.append(str(directory / (pathlib.Path(path).stem + ".parquet")))
    pq.write_table(pa.table({"text": texts}), out[-1], row_group_size=500)
  return out


def training_rate(workdir: pathlib.Path) -> float:
  config = tiny.get_config()
  config.train_tokens = 300 * config.batch.size * config.data.seq_len
  config.eval.every_tokens = 0
  train.train_and_evaluate(config, str(workdir))
  return [r for r in records.read_records(workdir) if "tokens_per_sec" in r][-1]["tokens_per_sec"]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    files = corpus.write_jsonl(tmp, files=4, per_file=20000)
    spm = train_vocab.train(files, str(tmp / "spm"), vocab_size=500)
    hf = hf_tokenizer(files, tmp / "tokenizer.json")
    parquet = as_parquet(files, tmp / "parquet")
    prepare.prepare(files, spm, str(tmp / "prepared_spm"), workers=1)
    tfds_name = corpus.prepare_tfds(tmp / "tfds", corpus.BenchText)
    consumed = training_rate(tmp / "run")
    results = {"train_tokens_per_sec_tiny": consumed, "sources": {}}
    variants = {
      "synthetic": {},
      "text_files_byte": dict(source="text_files", files=",".join(files)),
      "text_files_spm": dict(source="text_files", files=",".join(files), vocab=spm),
      "text_files_hf": dict(source="text_files", files=",".join(files), vocab=hf),
      "parquet_spm": dict(source="text_files", files=",".join(parquet), vocab=spm),
      "prepared_spm": dict(source="prepared", prepared_dir=str(tmp / "prepared_spm")),
      "tfds_spm": dict(
        source="tfds", tfds_name=tfds_name, tfds_data_dir=str(tmp / "tfds"), vocab=spm
      ),
      "seqio_spm": dict(
        source="seqio", tfds_name=tfds_name, tfds_data_dir=str(tmp / "tfds"), vocab=spm
      ),
    }
    for name, overrides in variants.items():
      config = tiny.get_config()
      config.data.update(overrides)
      rate, restores = stream_rate(config, _SECONDS.value)
      tokens = rate * config.data.seq_len
      results["sources"][name] = {
        "examples_per_sec": round(rate, 1),
        "tokens_per_sec": round(tokens),
        "headroom": round(tokens / consumed, 1),
        "restore_ms_at_1x_10x": [round(t * 1e3, 1) for t in restores],
      }
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
