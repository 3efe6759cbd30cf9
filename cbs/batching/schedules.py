"""Batch-size schedules: the size a run asks for, from tokens seen (ramps) or gradient statistics (tests).

Every schedule is monotone non-decreasing and capped at `batch.max_size`: the controller keeps the
largest size asked for so far. `ramp` is stagewise (`batch.ramp` = ((tokens, size), ...)) or linear
in tokens (`batch.ramp_tokens` > 0, from `batch.size` to `batch.max_size`). The adaptive schedules
ask for the batch their test says the current noise needs (see `statistics.py`).
"""

import math

import ml_collections

from cbs.batching import statistics

NAMES = ("constant", "ramp", "norm", "inner_product", "augmented", "gns")
ADAPTIVE = ("norm", "inner_product", "augmented", "gns")
LR_SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def max_size(batch_cfg: ml_collections.ConfigDict) -> int:
  """`batch.max_size`, where -1 means the initial size (no growth)."""
  return batch_cfg.size if batch_cfg.max_size == -1 else batch_cfg.max_size


def statistics_needed(batch_cfg: ml_collections.ConfigDict) -> str:
  """What the step must compute: none, the two norm sums, or also per-group inner products."""
  if batch_cfg.schedule in ("inner_product", "augmented"):
    return "full"
  return "norm" if batch_cfg.schedule in ADAPTIVE else "none"


def scheduled_size(batch_cfg: ml_collections.ConfigDict, tokens: int) -> int:
  """The size a token-indexed schedule asks for (the initial size for adaptive ones)."""
  if batch_cfg.schedule != "ramp":
    return batch_cfg.size
  if batch_cfg.ramp_tokens > 0:
    fraction = min(tokens / batch_cfg.ramp_tokens, 1.0)
    return int(batch_cfg.size + fraction * (max_size(batch_cfg) - batch_cfg.size))
  size = batch_cfg.size
  for start, stage_size in batch_cfg.ramp:
    if tokens >= start:
      size = stage_size
  return size


def requested_size(batch_cfg: ml_collections.ConfigDict, smoothed: dict) -> float:
  """The batch the adaptive test asks for, from (smoothed) statistics of one step."""
  name = batch_cfg.schedule
  if name == "norm":
    return statistics.norm_test_size(smoothed["trace"], smoothed["grad_sq_norm"], batch_cfg.eta)
  if name == "gns":
    return batch_cfg.gns_k * statistics.noise_scale(smoothed["trace"], smoothed["true_sq_norm"])
  inner = smoothed["inner_product_size"]
  return inner if name == "inner_product" else max(inner, smoothed["orthogonality_size"])


def lr_multiplier(batch_cfg: ml_collections.ConfigDict, size: int) -> float:
  """Learning-rate factor for the current batch relative to the initial one."""
  return (size / batch_cfg.size) ** LR_SCALINGS[batch_cfg.lr_scaling]


def validate(batch_cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad batch knob."""
  if batch_cfg.schedule not in NAMES:
    raise ValueError(f"batch.schedule={batch_cfg.schedule!r} is not one of: {', '.join(NAMES)}")
  if batch_cfg.lr_scaling not in LR_SCALINGS:
    raise ValueError(f"batch.lr_scaling={batch_cfg.lr_scaling!r} is not one of: "
                     f"{', '.join(LR_SCALINGS)}")
  if max_size(batch_cfg) < batch_cfg.size:
    raise ValueError(f"batch.max_size={batch_cfg.max_size} is below batch.size={batch_cfg.size}")
  for key in ("eta", "theta", "nu", "gns_k", "test_interval"):
    if not batch_cfg[key] > 0:
      raise ValueError(f"batch.{key}={batch_cfg[key]} must be positive")
  if not 0 <= batch_cfg.stats_ema < 1:
    raise ValueError(f"batch.stats_ema={batch_cfg.stats_ema} must be in [0, 1)")
  previous = -math.inf, 0
  for stage in batch_cfg.ramp:
    if len(stage) != 2 or stage[0] < previous[0] or stage[1] < previous[1]:
      raise ValueError(f"batch.ramp stage {tuple(stage)} must be (tokens, size) with tokens and "
                       "sizes non-decreasing")
    previous = stage
