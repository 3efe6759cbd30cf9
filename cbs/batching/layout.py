"""Batch layout: global batch = per-device microbatch x data-parallel size x accumulation steps.

The per-device microbatch is fixed by memory; a larger batch is more accumulation steps inside one
compiled step. Sizes are rounded up to what the layout can hold (a multiple of microbatch x
data-parallel, optionally a power of two, which bounds the number of distinct compiles) and capped.
"""

import dataclasses
import math

from cbs.config import registry

AUTO = "auto"  # batch.microbatch: chosen by compiling for the device's memory (`fit.py`)


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one step's global batch is cut into microbatches."""

  microbatch: int  # sequences per device per microbatch
  data_parallel: int  # devices the batch is split over
  accumulation: int  # microbatches per step (scan length)

  @property
  def size(self) -> int:
    return self.microbatch * self.data_parallel * self.accumulation


def round_size(size: int, unit: int, rounding: str, cap: int) -> int:
  """The smallest allowed batch >= size, but at most the largest allowed batch <= cap.

  `multiple`: any multiple of `unit` (microbatch x data-parallel); `pow2`: unit x 2^k.
  """
  rounded, largest = ROUNDINGS[rounding].build(size, unit, cap)
  return max(min(rounded, largest), unit)


def _pow2(size: int, unit: int, cap: int) -> tuple[int, int]:
  return (
    unit << max(math.ceil(math.log2(max(size, 1) / unit)), 0),
    unit << max(int(math.floor(math.log2(max(cap, unit) / unit))), 0),
  )


def _multiple(size: int, unit: int, cap: int) -> tuple[int, int]:
  return math.ceil(size / unit) * unit, max(cap // unit, 1) * unit


# The entry: (size, unit, cap) -> (the smallest allowed size >= size, the largest allowed <= cap).
ROUNDINGS = registry.Registry(
  "batch.round",
  {
    "multiple": registry.Choice(_multiple),
    "pow2": registry.Choice(_pow2),
  },
  unknown_example="power2",
)


def make(size: int, microbatch: int, data_parallel: int) -> Layout:
  """The layout of an already rounded size."""
  unit = microbatch * data_parallel
  if size % unit:
    raise ValueError(
      f"batch of {size} sequences is not a multiple of microbatch {microbatch} x "
      f"data-parallel {data_parallel}"
    )
  return Layout(microbatch, data_parallel, size // unit)


def default_microbatch(batch_size: int, data_parallel: int, requested: int) -> int:
  """`batch.microbatch`, or (-1) the whole initial batch per device, so the first step has no scan."""
  return requested if requested > 0 else max(batch_size // data_parallel, 1)
