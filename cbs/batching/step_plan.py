"""What one train step looks like: its compiled layout's key and the controller's plan for it.

The controller hands the loop one `StepPlan` per step, so the loop never assembles a step from
separate questions (size, scan length, statistics variant, lr factor, compiled function).
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple


class StepKey(NamedTuple):
  """A compiled layout: global batch, microbatches in the scan, statistics computed ("none" or
  the statistics kind). One compiled train step per key."""

  size: int
  microbatches: int
  statistics: str


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """One step: its layout, the learning-rate factor of its batch size, and its compiled step."""

  key: StepKey
  lr_multiplier: float
  step_fn: Callable

  @property
  def size(self) -> int:
    return self.key.size

  @property
  def accum_steps(self) -> int:
    """Microbatches this step scans: more than the plain layout's on some statistics steps."""
    return self.key.microbatches

  @property
  def tested(self) -> bool:
    """Whether the step returns the gradient-noise sums the controller reads."""
    return self.key.statistics != "none"
