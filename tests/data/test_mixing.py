"""Packed examples of text sources are mixed across the corpus: a one-file corpus in sorted order
trains on all of it from the start, a batch holds many documents, and the position still restores
exactly; a text-file position names its file."""

import json
import math
import random

import numpy as np
import pytest

from cbs import data as data_lib
from cbs.data import example_shuffle
from cbs.data import packed_stream
from cbs.data import stream as stream_lib
from cbs.data import text_files
from configs import tiny

SEQ_LEN = 64
BYTE_OFFSET = 3  # the byte vocabulary's id of byte b is b + 3
GREEK = "αβγδεζηθικλμνξοπρστυφχψω"  # two UTF-8 bytes each, both >= 0x80


def write_one_file(directory, texts):
  """One .jsonl training file of `texts` in order, and a small held-out file."""
  train, held_out = directory / "train.jsonl", directory / "held_out.jsonl"
  train.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  held_out.write_text(json.dumps({"text": "held out " * 40}) + "\n")
  return str(train), str(held_out)


def text_config(train, held_out, **data):
  config = tiny.get_config()
  config.data.update(
    {
      **dict(
        source="text_files",
        files=train,
        eval_files=held_out,
        vocab="byte",
        seq_len=SEQ_LEN,
        prefetch=0,
      ),
      **data,
    }
  )
  config.eval.tokens, config.eval.batch_size = 256, 4
  return config


def rows(batch):
  return [np.append(x, t[-1]) for x, t in zip(batch["inputs"], batch["targets"])]


# ---- two alphabets in one file: both halves from the start ----------------------------------------


@pytest.fixture(scope="module")
def two_alphabets(tmp_path_factory):
  """A file whose first half is Latin documents and second half Greek ones (same byte counts)."""
  rng = random.Random(0)
  latin = [
    "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(100, 400)))
    for _ in range(560)
  ]
  greek = ["".join(rng.choice(GREEK) for _ in range(len(t) // 2)) for t in latin]
  return write_one_file(tmp_path_factory.mktemp("alphabets"), latin + greek)


def greek_share(tokens) -> float:
  """The share of Greek bytes among the letter bytes of some tokens (EOS and padding left out)."""
  tokens = np.asarray(tokens)
  letters = tokens[tokens >= BYTE_OFFSET]
  return float(np.mean(letters >= BYTE_OFFSET + 0x80))


@pytest.mark.parametrize("hosts", [1, 2])
def test_the_first_five_percent_of_an_epoch_holds_both_halves_in_proportion(two_alphabets, hosts):
  train, held_out = two_alphabets
  config = text_config(train, held_out)
  for host in range(hosts):
    reader = text_files.TextFiles([train], "text", config.seed, host, hosts)
    epoch = "".join(text for _, text in reader.documents(epochs=1)).encode()
    epoch_share = greek_share(np.frombuffer(epoch, np.uint8).astype(np.int32) + BYTE_OFFSET)
    count = len(epoch) // SEQ_LEN // 20  # 5% of this host's epoch, in examples
    data = data_lib.make(config, host, hosts)
    first = rows(data.train.next_batch(count * hosts))
    data.train.close()
    # Each example's Greek share x_i lies in [0, 1] with mean p over the epoch, so its variance is
    # at most p (1 - p), the Bernoulli one; n examples drawn without replacement vary less.
    bound = 4 * math.sqrt(epoch_share * (1 - epoch_share) / count)
    shares = [greek_share(r) for r in first]
    assert count >= 100 and 0.3 < epoch_share < 0.7
    assert abs(np.mean(shares) - epoch_share) <= bound, (host, np.mean(shares), epoch_share, bound)


# ---- many documents per batch ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagged_documents(tmp_path_factory):
  """600 documents of 5 to 15 examples each, every few bytes tagged with the document's number."""
  rng = random.Random(1)
  texts = [f"<{i:04d}>" * rng.randint(50, 150) for i in range(600)]
  return write_one_file(tmp_path_factory.mktemp("tagged"), texts)


def documents_of(batch) -> list[int]:
  """The number of the document each example starts in (the first tag it holds)."""
  found = []
  for row in rows(batch):
    text = bytes(int(t) - BYTE_OFFSET for t in row if t >= BYTE_OFFSET).decode()
    found.append(int(text[text.index("<") + 1 :][:4]))
  return found


def test_a_batch_holds_examples_of_many_documents(tagged_documents):
  batch_size, batches = 32, 10
  config = text_config(*tagged_documents)
  data = data_lib.make(config, 0, 1)
  distinct = [len(set(documents_of(data.train.next_batch(batch_size)))) for _ in range(batches)]
  data.train.close()
  assert min(distinct) >= 0.75 * batch_size, distinct


# ---- the mixed position restores exactly ----------------------------------------------------------


def _reader(documents):
  """A reader of (cursor [epoch, index], tokens), repeated for ever."""

  def read(cursor):
    epoch, first = cursor or (0, 0)
    while True:
      for index in range(first, len(documents)):
        yield [epoch, index], documents[index]
      epoch, first = epoch + 1, 0

  return read


def test_blocks_are_permutations_within_an_epoch_and_every_position_restores():
  rng = np.random.default_rng(5)
  documents = [rng.integers(2, 50, rng.integers(1, 30)) for _ in range(40)]
  packed = packed_stream.PackedDataset(_reader(documents), 8, eos_id=1)
  positions, examples, iterator = [], [], iter(packed)
  for _ in range(150):  # more than two epochs
    positions.append(iterator.get_state())
    examples.append(next(iterator)[0].tobytes())
  block = 7
  mixed = example_shuffle.BlockShuffleDataset(
    packed, block, seed=3, epoch_of=lambda p: p["cursor"][0] if p["cursor"] else 0
  )
  iterator, states, out = iter(mixed), [], []
  for _ in range(120):
    states.append(json.loads(json.dumps(iterator.get_state())))
    out.append(next(iterator)[0].tobytes())
  # The reference blocks: runs of `block` consecutive examples, cut again where an epoch begins.
  epochs = [p["cursor"][0] if p["cursor"] else 0 for p in positions]
  blocks, start = [], 0
  while start < len(out):
    stop = start + 1
    while stop - start < block and epochs[stop] == epochs[start]:
      stop += 1
    blocks.append((start, stop))
    start = stop
  assert any(stop - start < block for start, stop in blocks[:-1])  # an epoch cut a block short
  for start, stop in blocks[:-1]:
    assert sorted(out[start:stop]) == sorted(examples[start:stop])
  assert out[: len(out) - 10] != examples[: len(out) - 10]
  for k in range(len(states) - 10):
    restored = iter(mixed)
    restored.set_state(states[k])
    assert [next(restored)[0].tobytes() for _ in range(10)] == out[k : k + 10], k


def test_a_text_files_stream_resumed_mid_block_continues_exactly(tagged_documents):
  config = text_config(*tagged_documents, shuffle_buffer=100, prefetch=8)
  whole = data_lib.make(config, 1, 2)
  expected = [rows(whole.train.next_batch(16)) for _ in range(20)]
  whole.train.close()
  for stop in (3, 13):  # mid-block and in a later block
    data = data_lib.make(config, 1, 2)
    for _ in range(stop):
      data.train.next_batch(16)
    state = json.loads(json.dumps(data.train.get_state()))
    data.train.close()
    resumed = data_lib.make(config, 1, 2)
    resumed.train.set_state(state)
    got = [rows(resumed.train.next_batch(16)) for _ in range(stop, 20)]
    resumed.train.close()
    np.testing.assert_array_equal(np.array(got), np.array(expected[stop:]))


# ---- a text-file position names its file ----------------------------------------------------------


def _write_jsonl(path, first, count):
  path.write_text(
    "".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(first, first + count))
  )


def test_a_position_continues_in_its_file_when_the_glob_gains_a_file(tmp_path):
  _write_jsonl(tmp_path / "a.jsonl", 0, 2000)
  _write_jsonl(tmp_path / "c.jsonl", 2000, 2000)
  before = text_files.TextFiles(text_files.resolve(str(tmp_path / "*.jsonl")), "text", seed=0)
  reference = [d for _, d in zip(range(3000), before.documents())]
  _write_jsonl(tmp_path / "b.jsonl", 4000, 2000)  # sorts between the two
  after = text_files.TextFiles(text_files.resolve(str(tmp_path / "*.jsonl")), "text", seed=0)
  for cursor, text in reference[::250]:
    _, first = next(after.documents(json.loads(json.dumps(cursor))))
    assert first == text, (cursor, first)


def test_a_position_in_a_file_no_longer_listed_is_refused(tmp_path):
  _write_jsonl(tmp_path / "a.jsonl", 0, 50)
  _write_jsonl(tmp_path / "b.jsonl", 50, 50)
  both = text_files.TextFiles([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], "text", seed=0)
  cursor = next(c for c, _ in both.documents() if c[1].endswith("a.jsonl"))
  only_b = text_files.TextFiles([tmp_path / "b.jsonl"], "text", seed=0)
  with pytest.raises(
    stream_lib.DataError,
    match=r"position is in .*a\.jsonl, which data\.files "
    r"no longer holds; resume with the files the run started with",
  ):
    next(only_b.documents(cursor))
  with pytest.raises(stream_lib.DataError, match=r"does not name its file"):
    next(both.documents([0, 1, 0]))  # a position of the reader that counted pieces
