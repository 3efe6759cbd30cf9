"""The progress record: where a run stands, saved with every checkpoint and returned by training.

It is what a resumed run needs besides the weights to continue exactly: the step and token
counters, the seed, this host's data position, the identity of the data it was written on, the batch
controller's state and the count of skipped non-finite steps. On disk it is the JSON of `as_dict`;
records of older versions lack some fields, read as None.
"""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Progress:
  """A run's counters and positions after `step` steps and `tokens` tokens."""

  step: int
  tokens: int
  seed: int
  data: Any = None  # this host's data position (the stream's own JSON state)
  data_identity: Any = None  # what the data was when saved (`cbs.data.identity`)
  batch: dict | None = None  # the batch controller's state
  skipped_steps: int | None = None  # non-finite steps skipped so far

  @classmethod
  def start(cls, seed: int) -> "Progress":
    """A fresh run's, before its first step."""
    return cls(step=0, tokens=0, seed=seed)

  @classmethod
  def from_dict(cls, saved: dict) -> "Progress":
    """The record as a checkpoint holds it."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})

  def branched(self) -> "Progress":
    """The record a branch starts from: counters and data position, not the parent's data
    identity or batch decisions (the branch's own config decides those)."""
    return dataclasses.replace(self, data_identity=None, batch=None)

  def as_dict(self) -> dict:
    """The JSON a checkpoint stores; fields a record never had are left out."""
    fields = (f.name for f in dataclasses.fields(self))
    return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}
