"""Packed examples of any tokenized document reader, as a grain dataset with an O(1) position.

The reader maps a cursor (None = the start) to this host's (cursor, token ids) documents from
there on. The iterator's state is the position of the next example - the cursor of its first
document and the tokens of it already consumed - so restoring it reopens the reader at that
document and continues with exactly the example an uninterrupted run would have read next, at
the cost of one document, wherever the run stopped.
"""

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from cbs.data import packing
from cbs.data import stream as stream_lib

Reader = Callable[[Any], Iterator[packing.Document]]


class PackedDataset(grain.IterDataset):
  """This host's packed examples: (tokens [seq_len + 1], number of real tokens)."""

  def __init__(self, read: Reader, seq_len: int, eos_id: int):
    super().__init__()
    self._read, self._seq_len, self._eos_id = read, seq_len, eos_id

  def __iter__(self) -> grain.DatasetIterator:
    return _PackedIterator(self._read, self._seq_len, self._eos_id)


class _PackedIterator(grain.DatasetIterator):
  def __init__(self, read: Reader, seq_len: int, eos_id: int):
    super().__init__()
    self._read, self._seq_len, self._eos_id = read, seq_len, eos_id
    self._position = {"cursor": None, "offset": 0}
    self._examples = None

  def __next__(self) -> tuple[np.ndarray, int]:
    if self._examples is None:
      self._examples = packing.pack(
        self._read(self._position["cursor"]), self._seq_len, self._eos_id, self._position["offset"]
      )
    tokens, length, self._position = next(self._examples)
    return tokens, length

  def get_state(self) -> dict:
    return dict(self._position)

  def set_state(self, state: dict) -> None:
    self._position = {"cursor": state["cursor"], "offset": int(state["offset"])}
    self._examples = None


def eval_batches(
  documents: Iterator[packing.Document],
  seq_len: int,
  eos_id: int,
  num_examples: int,
  eval_batch: int,
  process_index: int,
  process_count: int,
) -> list[stream_lib.Batch]:
  """The first `num_examples` packed examples of the held-out documents, as this host's rows.

  Every host packs the same held-out documents and keeps its rows, so the set is identical for every
  run of a sweep. A source shorter than requested gives fewer examples; the last batch is filled with
  fully masked rows.
  """
  examples = []
  for tokens, length, _ in packing.pack(documents, seq_len, eos_id):
    examples.append((tokens, length))
    if len(examples) == num_examples:
      break
  return stream_lib.eval_batches(examples, eval_batch, process_index, process_count)
