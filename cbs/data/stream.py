"""The interface every data source implements, and helpers they share.

A `Stream` hands out, at each step, exactly the next `global_batch` examples of a deterministic
sequence; this host receives its contiguous share (`global_batch / process_count` rows). Its position
is a small JSON-able dict saved in every checkpoint, so a resumed run reads the same examples as an
uninterrupted one, also when the batch size changes between steps. Batches are dicts of numpy arrays:
`inputs` and `targets` (int32 [b, seq_len]) and `weights` (float32 [b, seq_len], 0 on padding).
"""

import dataclasses
from typing import Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class Stream(Protocol):
  """An exact-once, resumable sequence of training examples."""

  def next_batch(self, global_batch: int) -> Batch:
    """This host's rows of the next `global_batch` examples."""

  def get_state(self) -> dict:
    """Position in the stream (JSON-able)."""

  def set_state(self, state: dict) -> None:
    """Continue from a position returned by `get_state`."""


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


def to_batch(tokens_NxL1: np.ndarray) -> Batch:
  """Language-modelling batch from sequences one token longer than the context."""
  return {
      "inputs": tokens_NxL1[:, :-1],
      "targets": tokens_NxL1[:, 1:],
      "weights": np.ones(tokens_NxL1[:, 1:].shape, np.float32),
  }
