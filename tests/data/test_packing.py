"""Packing and the exact-once grain stream against direct concatenation of the documents."""

import grain
import numpy as np
import pytest

from cbs.data import packed_stream
from cbs.data import packing
from cbs.data import stream as stream_lib

SEQ_LEN, EOS = 8, 1


def documents(count=60, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(2, 50, size=rng.integers(1, 20)).astype(np.int32) for _ in range(count)]


def reference_examples(docs):
  """Every full window of SEQ_LEN + 1 tokens starting at multiples of SEQ_LEN of the EOS-joined stream."""
  flat = np.concatenate([np.append(d, EOS) for d in docs])
  count = (len(flat) - 1) // SEQ_LEN
  return [flat[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1] for i in range(count)], flat


def test_packed_examples_are_windows_of_the_joined_documents():
  docs = documents()
  expected, flat = reference_examples(docs)
  packed = list(packing.pack(enumerate(docs), SEQ_LEN, EOS))
  full = [tokens for tokens, length, _ in packed if length == SEQ_LEN + 1]
  np.testing.assert_array_equal(np.stack(full), np.stack(expected))
  tail_tokens, tail_length, _ = packed[-1]
  assert tail_length == len(flat) - len(expected) * SEQ_LEN
  np.testing.assert_array_equal(tail_tokens[tail_length:], 0)


def test_restoring_a_position_continues_with_the_next_example():
  docs = documents()
  packed = list(packing.pack(enumerate(docs), SEQ_LEN, EOS))
  for k in (0, 5, 17):
    position = packed[k][2]
    first = position["cursor"]
    resumed = packing.pack(enumerate(docs[first:], first), SEQ_LEN, EOS, position["offset"])
    np.testing.assert_array_equal(next(resumed)[0], packed[k + 1][0])


def test_padding_is_masked_out_of_the_loss():
  batch = stream_lib.examples_batch(
    [(np.array([5, 6, 1, 0, 0]), 3), (np.array([7, 8, 9, 10, 11]), 5)]
  )
  np.testing.assert_array_equal(batch["weights"], [[1, 1, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(batch["targets"][0], [6, 1, 0, 0])


def endless(docs, reads=None):
  """A reader over the documents repeated forever; the cursor is the running document index."""

  def read(cursor):
    if reads is not None:
      reads.append(cursor)
    index = cursor or 0
    while True:
      yield index, docs[index % len(docs)]
      index += 1

  return read


def stream(read, process_count=1, prefetch=7):
  examples = grain.experimental.ThreadPrefetchIterDataset(
    packed_stream.PackedDataset(read, SEQ_LEN, EOS), prefetch_buffer_size=prefetch
  )
  return stream_lib.GrainStream(examples, 0, process_count)


def consumed_examples(batch):
  return [np.append(i, t[-1]) for i, t in zip(batch["inputs"], batch["targets"])]


def test_changing_batch_sizes_consume_the_stream_exactly_once():
  docs = documents(200)
  expected, _ = reference_examples(docs)
  s = stream(endless(docs))
  consumed = []
  for batch_size in (4, 4, 16, 2, 2, 32, 8):
    consumed += consumed_examples(s.next_batch(batch_size))
  s.close()
  np.testing.assert_array_equal(np.stack(consumed), np.stack(expected[: len(consumed)]))


def test_a_restored_stream_yields_the_identical_next_examples_reading_one_document():
  docs = documents(200)
  first = stream(endless(docs), prefetch=64)
  first.next_batch(6)
  first.next_batch(10)
  state = first.get_state()
  expected = first.next_batch(12)
  first.close()
  reads = []
  second = stream(endless(docs, reads))
  second.set_state(state)
  for key, value in second.next_batch(12).items():
    np.testing.assert_array_equal(value, expected[key])
  second.close()
  # The reader was reopened once, at the document the position names: nothing before it is read.
  assert reads == [state["cursor"]] and state["cursor"] > 0


def test_host_rows_must_split_evenly():
  s = stream(endless(documents()), process_count=2)
  with pytest.raises(ValueError, match="does not split over 2 hosts"):
    s.next_batch(5)
  s.close()


def test_errors_in_the_read_ahead_thread_reach_the_caller():
  def broken(cursor):
    yield 0, np.arange(3, 30, dtype=np.int32)
    raise stream_lib.DataError("part3.jsonl:17 is not valid JSON")

  s = stream(broken)
  with pytest.raises(stream_lib.DataError, match="part3.jsonl:17"):
    s.next_batch(8)
  s.close()


def test_eval_set_is_padded_to_whole_batches_with_masked_rows():
  batches = packed_stream.eval_batches(
    enumerate(documents(5)),
    SEQ_LEN,
    EOS,
    num_examples=100,
    eval_batch=4,
    process_index=1,
    process_count=2,
  )
  assert all(b["inputs"].shape == (2, SEQ_LEN) for b in batches)
  assert batches[-1]["weights"][-1].sum() == 0
