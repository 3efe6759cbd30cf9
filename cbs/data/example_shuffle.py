"""Mixes a host's packed examples in seeded blocks, so a batch holds examples of many documents.

Packing cuts consecutive windows of each document, so a reader's examples come in runs of the same
document; trained in that order, one batch would hold a handful of documents and its examples would
be far from independent. This dataset reads the next `block` examples (never across an epoch
boundary), hands them out in a permutation seeded by (seed, block number) and moves on. Memory is
one block; the position is (block number, the reader's position at the block's start, examples of
the block handed out), so a restore re-reads one block - the same cost wherever the run stopped.
"""

from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from cbs.data import stream as stream_lib

Example = tuple[np.ndarray, int]  # (tokens [seq_len + 1], number of real tokens)
EpochOf = Callable[[dict], Any]  # the epoch a reader position lies in


class BlockShuffleDataset(grain.IterDataset):
  """The parent's examples, each block of `block` of them in a seeded order."""

  def __init__(self, parent: grain.IterDataset, block: int, seed: int, epoch_of: EpochOf):
    super().__init__(parent)
    if block < 1:
      raise ValueError(f"data.shuffle_buffer={block}; it must be >= 1 (1 = reading order)")
    self._block, self._seed, self._epoch_of = block, seed, epoch_of

  def __iter__(self) -> grain.DatasetIterator:
    return _BlockShuffleIterator(self._parent.__iter__(), self._block, self._seed, self._epoch_of)


class _BlockShuffleIterator(grain.DatasetIterator):
  def __init__(self, parent: grain.DatasetIterator, block: int, seed: int, epoch_of: EpochOf):
    super().__init__(parent)
    self._block, self._seed, self._epoch_of = block, seed, epoch_of
    self._number, self._start, self._handed = 0, None, 0
    self._examples: list[Example] | None = None

  def _fill(self) -> None:
    """Reads block `self._number`, which starts at the parent's current position."""
    self._start = self._parent.get_state()
    epoch = self._epoch_of(self._start)
    examples = []
    while len(examples) < self._block and (
      not examples or self._epoch_of(self._parent.get_state()) == epoch
    ):
      examples.append(next(self._parent))
    order = np.random.default_rng([self._seed, self._number]).permutation(len(examples))
    self._examples = [examples[i] for i in order]

  def __next__(self) -> Example:
    if self._examples is None:
      self._fill()
    if self._handed == len(self._examples):
      self._number, self._handed = self._number + 1, 0
      self._fill()
    self._handed += 1
    return self._examples[self._handed - 1]

  def get_state(self) -> dict:
    if self._examples is None and self._start is None:
      self._start = self._parent.get_state()
    return {"block": self._number, "start": self._start, "handed": self._handed}

  def set_state(self, state: dict) -> None:
    if set(state) != {"block", "start", "handed"}:
      raise stream_lib.DataError(
        f"the saved data position {state} is not a position of mixed examples (block, start, "
        "handed): it was written by a reader that did not mix examples; resume it with the "
        "version that wrote it"
      )
    self._number, self._handed = int(state["block"]), int(state["handed"])
    self._parent.set_state(state["start"])
    self._start, self._examples = state["start"], None  # the block is re-read on the next example
