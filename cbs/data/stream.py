"""The interface every data source implements, and the grain-backed stream the text sources share.

A `Stream` hands out, at each step, this host's rows of exactly the next `global_batch` examples
(`global_batch / process_count` rows of its own deterministic sequence), so a batch-size change
consumes exactly a prefix of every host's sequence. Its position is a small JSON-able dict that
each host saves and restores for itself in every checkpoint, so a resumed run reads the same
examples as an uninterrupted one. Batches are dicts of numpy arrays: `inputs` and `targets` (int32
[b, seq_len]) and `weights` (float32 [b, seq_len], 0 on padding).
"""

import dataclasses
from typing import Protocol

import grain
import ml_collections
import numpy as np

Batch = dict[str, np.ndarray]


class DataError(ValueError):
  """Bad data found while reading (names the file and the position): the user's to fix."""


class Stream(Protocol):
  """An exact-once, resumable sequence of training examples."""

  def next_batch(self, global_batch: int) -> Batch:
    """This host's rows of the next `global_batch` examples."""

  def get_state(self) -> dict:
    """Position in the stream (JSON-able)."""

  def set_state(self, state: dict) -> None:
    """Continue from a position returned by `get_state`."""

  def close(self) -> None:
    """Stops background readers."""


@dataclasses.dataclass
class Data:
  """What a run needs from its data: the stream, the held-out set and facts about the language."""

  train: Stream
  eval_batches: list[Batch]  # this host's rows of a fixed held-out set, in eval-batch chunks
  vocab_size: int
  floors: dict[str, float]  # known loss floors (nats/token) worth logging, e.g. the entropy rate


def host_rows(global_rows: int, process_index: int, process_count: int) -> slice:
  """The contiguous block of a global batch's rows that belongs to this host."""
  if global_rows % process_count:
    raise ValueError(f"batch of {global_rows} sequences does not split over {process_count} hosts")
  per_host = global_rows // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


def to_batch(tokens_NxL1: np.ndarray, lengths_N: np.ndarray | None = None) -> Batch:
  """Language-modelling batch from sequences one token longer than the context.

  `lengths_N` counts each sequence's real tokens (packed examples end padded): targets beyond it
  get weight 0. None: every token is real.
  """
  if lengths_N is None:
    weights = np.ones(tokens_NxL1[:, 1:].shape, np.float32)
  else:
    positions = np.arange(1, tokens_NxL1.shape[1])[None, :]
    weights = (positions < np.asarray(lengths_N)[:, None]).astype(np.float32)
  return {"inputs": tokens_NxL1[:, :-1], "targets": tokens_NxL1[:, 1:], "weights": weights}


def examples_batch(examples: list[tuple[np.ndarray, int]]) -> Batch:
  """`to_batch` of packed examples: (tokens [seq_len + 1], number of real tokens) each."""
  return to_batch(
    np.stack([tokens for tokens, _ in examples]), np.array([length for _, length in examples])
  )


def eval_examples(config: ml_collections.ConfigDict) -> int:
  """Held-out examples to score: `eval.tokens` rounded up to whole eval batches (at least one).

  Every source sizes its fixed held-out set by this, so `eval.tokens` means the same on each.
  """
  eval_batch = config.eval.batch_size
  return -(-max(config.eval.tokens, 1) // (config.data.seq_len * eval_batch)) * eval_batch


def eval_batches(
  examples: list[tuple[np.ndarray, int]], eval_batch: int, process_index: int, process_count: int
) -> list[Batch]:
  """Fixed held-out examples as this host's rows of whole eval batches (padding rows masked)."""
  if not examples:
    raise ValueError("the held-out data is empty")
  examples = list(examples)
  seq_len1 = len(examples[0][0])
  while len(examples) % eval_batch:
    examples.append((np.zeros(seq_len1, np.int32), 0))
  rows = host_rows(eval_batch, process_index, process_count)
  return [
    examples_batch(examples[start : start + eval_batch][rows])
    for start in range(0, len(examples), eval_batch)
  ]


class GrainStream:
  """A `Stream` over this host's grain dataset of (tokens [seq_len + 1], real tokens) examples.

  The position is the grain iterator's state after the last example handed out (read-ahead does
  not move it); errors raised while reading surface here, in the training thread.
  """

  def __init__(self, examples: grain.IterDataset, process_index: int, process_count: int):
    self._examples = examples
    self._process = (process_index, process_count)
    self._iterator = None
    self._state = None

  def _started(self) -> grain.DatasetIterator:
    if self._iterator is None:
      self._iterator = iter(self._examples)
      if self._state is not None:
        self._iterator.set_state(self._state)
    return self._iterator

  def next_batch(self, global_batch: int) -> Batch:
    rows = host_rows(global_batch, *self._process)
    iterator = self._started()
    try:
      items = [next(iterator) for _ in range(rows.stop - rows.start)]
    except StopIteration:
      raise DataError("the training data ran out; the source should repeat (epochs)") from None
    return examples_batch(items)

  def get_state(self) -> dict:
    return self._started().get_state()

  def set_state(self, state: dict) -> None:
    self.close()
    self._state = state

  def close(self) -> None:
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None
