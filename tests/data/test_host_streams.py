"""Per-host streams on every source: exact-once across batch-size changes and restores, O(1) resume,
and bad data reported in one line."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from cbs import data as data_lib
from cbs.data import prepare
from cbs.data import prepared
from cbs.data import seqio_source
from cbs.data import text_files
from cbs.data import tfds_source
from cbs.data import vocab as vocab_lib
from configs import tiny
from tests.data import corpus
from tests.helpers import ROOT
from tests.helpers import STEP_TOKENS
from tests.helpers import last_line
from tests.helpers import main_flags
from tests.helpers import tiny_config

SEQ_LEN = 64
SIZES = (4, 8, 2, 16, 6, 12)  # global batch sizes, restored from a saved position after the third
HOSTS = 2


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory, jsonl_files):
  directory = tmp_path_factory.mktemp("prepared")  # bytes: an epoch is longer than the test reads
  prepare.prepare(jsonl_files, "byte", str(directory), record_tokens=128, workers=1)
  return str(directory)


def config_for(
  source, jsonl_files, tfds_dir, tfds_array_record_dir, spm_model, prepared_dir, shuffle_buffer=1
):
  """Examples in reading order by default (`shuffle_buffer` 1), so packing can be checked."""
  config = tiny.get_config()
  config.data.update(
    dict(
      source="tfds" if source.startswith("tfds") else source,
      files=",".join(jsonl_files),
      vocab=spm_model,
      prepared_dir=prepared_dir,
      tfds_name="tiny_text:1.0.0",
      tfds_data_dir=str(tfds_array_record_dir if source == "tfds_array_record" else tfds_dir),
      seq_len=SEQ_LEN,
      prefetch=16,
      shuffle_buffer=shuffle_buffer,
    )
  )
  config.eval.tokens, config.eval.batch_size = 512, 8
  return config


def consume(config, host, restore_at=3):
  """The examples host `host` of HOSTS receives for SIZES, resumed from a JSON position once
  (before batch `restore_at`; None: never)."""
  data = data_lib.make(config, host, HOSTS)
  rows = []
  for number, size in enumerate(SIZES):
    if number == restore_at:
      state = json.loads(json.dumps(data.train.get_state()))  # as the checkpoint stores it
      data.train.close()
      data = data_lib.make(config, host, HOSTS)
      data.train.set_state(state)
    batch = data.train.next_batch(size)
    assert batch["inputs"].shape == (size // HOSTS, SEQ_LEN)
    rows += [np.append(x, t[-1]) for x, t in zip(batch["inputs"], batch["targets"])]
  data.train.close()
  return np.stack(rows)


def windows(token_documents, eos):
  """Independent packing: windows of SEQ_LEN + 1 tokens, SEQ_LEN apart, of the EOS-joined stream."""
  flat = np.concatenate([np.append(np.asarray(d, np.int32), eos) for d in token_documents])
  return np.stack(
    [flat[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1] for i in range((len(flat) - 1) // SEQ_LEN)]
  )


def host_documents(source, config, host, vocabulary):
  """This host's documents in reading order, from the source's own document reader."""
  d = config.data
  if source == "text_files":
    paths = text_files.resolve(d.files)[:-1]
    reader = text_files.TextFiles(paths, d.text_field, config.seed, host, HOSTS)
    texts = [text for _, (_, text) in zip(range(400), reader.documents())]
  elif source == "seqio":
    task = seqio_source.task(seqio_source.register_c4(d.vocab, d.tfds_name, d.tfds_data_dir))
    return [
      ids for _, ids in seqio_source.SeqioDocuments(task, "train", host, HOSTS).documents(epochs=2)
    ]
  else:
    reader = tfds_source.TfdsDocuments(d.tfds_name, d.tfds_data_dir, "train", "text", host, HOSTS)
    texts = [t for _, t in reader.documents(epochs=2)]
  return [vocabulary.encode(t) for t in texts]


@pytest.mark.parametrize("source", ["text_files", "tfds", "tfds_array_record", "seqio"])
def test_each_host_consumes_exactly_the_prefix_of_its_stream(
  source, jsonl_files, tfds_dir, tfds_array_record_dir, spm_model
):
  config = config_for(source, jsonl_files, tfds_dir, tfds_array_record_dir, spm_model, "")
  vocabulary = vocab_lib.make(spm_model)
  consumed = []
  for host in range(HOSTS):
    rows = consume(config, host)
    expected = windows(host_documents(source, config, host, vocabulary), vocabulary.eos_id)
    np.testing.assert_array_equal(rows, expected[: len(rows)])
    consumed.append({row.tobytes() for row in rows})
  assert len(consumed[0]) == len(consumed[1]) == sum(SIZES) // HOSTS
  assert not consumed[0] & consumed[1]


def test_prepared_hosts_together_consume_exactly_a_prefix_of_the_global_stream(
  prepared_dir, spm_model
):
  config = config_for("prepared", [], "", "", spm_model, prepared_dir)
  config.seed = 11
  rows = [consume(config, host) for host in range(HOSTS)]
  split = prepared.PreparedSplit(prepared_dir, "train")
  flat = split.window(0, split.tokens)
  every_window = {
    flat[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1].tobytes()
    for i in range(split.num_examples(SEQ_LEN))
  }
  assert len(every_window) > sum(SIZES)
  # Global example i of the epoch's permutation is row i // HOSTS of host i % HOSTS.
  merged = [rows[i % HOSTS][i // HOSTS].tobytes() for i in range(sum(SIZES))]
  assert len(set(merged)) == len(merged) and set(merged) <= every_window
  # The global order does not depend on the number of hosts: one host reads the same sequence.
  one_host = data_lib.make(config, 0, 1)
  sequence = one_host.train.next_batch(sum(SIZES))
  one_host.train.close()
  single = [np.append(x, t[-1]).tobytes() for x, t in zip(sequence["inputs"], sequence["targets"])]
  assert single == merged


def _restore_seconds(config, state, repeats=5) -> float:
  """Fastest of `repeats` restores of a fresh stream at `state`, up to its first example."""
  best = float("inf")
  for _ in range(repeats):
    data = data_lib.make(config, 0, 1)
    start = time.perf_counter()
    data.train.set_state(state)
    data.train.next_batch(1)
    best = min(best, time.perf_counter() - start)
    data.train.close()
  return best


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory):
  return corpus.write_jsonl(tmp_path_factory.mktemp("long"), files=4, per_file=3000)


@pytest.mark.parametrize("source", ["text_files", "prepared"])
def test_restore_costs_the_same_at_ten_times_the_position(source, long_corpus, tmp_path):
  config = config_for(source, long_corpus, "", "", "byte", str(tmp_path))
  config.data.prefetch = 0 if source == "text_files" else 1
  if source == "prepared":
    prepare.prepare(long_corpus, "byte", str(tmp_path), workers=1)
  data = data_lib.make(config, 0, 1)
  states = []
  for examples in (400, 3600):  # positions 400 and 4000
    data.train.next_batch(examples)
    states.append(json.loads(json.dumps(data.train.get_state())))
  data.train.close()
  near, far = (_restore_seconds(config, state) for state in states)
  print(f"{source}: restore at 400 examples {near * 1e3:.1f} ms, at 4000 {far * 1e3:.1f} ms")
  assert far <= 1.5 * near + 0.05, (near, far)


def _main(workdir, *overrides):
  """The command line started in the background, so the cases run side by side."""
  flags = main_flags(workdir, {"train_tokens": 80000, "schedule.warmup_tokens": 0})
  return subprocess.Popen(
    [sys.executable, "-m", "cbs.main", *flags, *overrides],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def test_bad_data_is_reported_in_one_line_with_the_file_and_position(tmp_path):
  empty = [tmp_path / f"empty{i}.jsonl" for i in range(3)]
  for path in empty:
    path.write_text('{"text": ""}\n' * 5)
  lines = [json.dumps({"text": corpus.document(i)}) for i in range(400)]
  lines[300] = '{"text": "cut short'
  (tmp_path / "corrupt.jsonl").write_text("\n".join(lines) + "\n")
  (tmp_path / "held_out.jsonl").write_text(json.dumps({"text": corpus.document(7)}) + "\n")
  import pyarrow as pa
  import pyarrow.parquet as pq

  pq.write_table(pa.table({"body": ["no text column"]}), tmp_path / "body.parquet")
  cases = {
    "empty": (
      [f"--config.data.files={','.join(map(str, empty))}"],
      "cbs: bad data: data.files hold no text for host 0 of 1: every document of its "
      "pieces is empty",
    ),
    "corrupt": (
      [f"--config.data.files={tmp_path / 'corrupt.jsonl'}"],
      f"cbs: bad data: {tmp_path / 'corrupt.jsonl'}:301 (byte {sum(map(len, lines[:300])) + 300}) "
      "is not valid JSON",
    ),
    "parquet": (
      [f"--config.data.files={tmp_path / 'body.parquet'}"],
      f"cbs: bad config: {tmp_path / 'body.parquet'} has no column 'text' "
      "(data.text_field); columns: body",
    ),
  }
  runs = {
    name: _main(
      tmp_path / name,
      "--config.data.source=text_files",
      f"--config.data.eval_files={tmp_path / 'held_out.jsonl'}",
      *overrides,
    )
    for name, (overrides, _) in cases.items()
  }
  for name, run in runs.items():
    _, stderr = run.communicate(timeout=300)
    last = last_line(stderr)
    assert run.returncode == 2, (name, stderr[-2000:])
    assert last.startswith(cases[name][1]), (name, last)
    assert "Traceback" not in stderr, (name, stderr[-2000:])


def test_a_checkpoint_of_another_host_count_is_refused_in_one_line(tmp_path):
  from cbs import train
  from cbs.checkpoint import errors as checkpoint

  config = tiny_config(
    {
      "train_tokens": 2 * STEP_TOKENS,
      "schedule.warmup_tokens": 0,
      "eval.every_tokens": 0,
      "mesh.data": 1,
    }
  )
  train.train_and_evaluate(config, str(tmp_path))
  data_item = tmp_path / "checkpoints" / "2" / "data"
  own = data_item / "process_0-of-1.json"
  for host in range(2):  # as if two hosts had written it
    (data_item / f"process_{host}-of-2.json").write_text(own.read_text())
  own.unlink()
  config.train_tokens *= 2
  with pytest.raises(
    checkpoint.HostCountError,
    match=r"^checkpoint 2 was written by 2 host\(s\) "
    r"and this run has 1: .* resume it on the same number of hosts$",
  ):
    train.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / "checkpoints" / "2").exists()  # nothing set aside
