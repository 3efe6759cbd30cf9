"""Batch-size schedules: the size a run asks for, from tokens seen (ramps) or gradient statistics (tests).

Every schedule is monotone non-decreasing and capped at `batch.max_size`: the controller keeps the
largest size asked for so far. `ramp` is stagewise (`batch.ramp` = ((tokens, size), ...)) or linear
in tokens (`batch.ramp_tokens` > 0, from `batch.size` to `batch.max_size`). `measured` is the
stagewise ramp that a `cbs.probe` result implies (`batch.probe_file`): from each probed token count
on, the local critical batch size measured there (never decreasing). The adaptive schedules ask for
the batch their test says the current noise needs (see `statistics.py`).
"""

import functools
import json
import math

import ml_collections

from cbs.batching import statistics

NAMES = ("constant", "ramp", "measured", "norm", "inner_product", "augmented", "gns")
STAGEWISE = ("ramp", "measured")
ADAPTIVE = ("norm", "inner_product", "augmented", "gns")
LR_SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def max_size(batch_cfg: ml_collections.ConfigDict) -> int:
  """`batch.max_size`; -1 means the initial size (no growth), or the last measured stage."""
  if batch_cfg.max_size != -1:
    return batch_cfg.max_size
  if batch_cfg.schedule == "measured":
    return max(batch_cfg.size, measured_stages(batch_cfg.probe_file)[-1][1])
  return batch_cfg.size


def statistics_needed(batch_cfg: ml_collections.ConfigDict) -> str:
  """What the step must compute: none, the two norm sums, or also per-group inner products."""
  if batch_cfg.schedule in ("inner_product", "augmented"):
    return "full"
  return "norm" if batch_cfg.schedule in ADAPTIVE or batch_cfg.gns_every > 0 else "none"


@functools.lru_cache(maxsize=8)
def measured_stages(probe_file: str) -> tuple[tuple[int, int], ...]:
  """((tokens, size), ...) from a probe result: each point's local CBS, as a running maximum."""
  from etils import epath  # noqa: PLC0415

  try:
    points = json.loads(epath.Path(probe_file).read_text())["points"]
    stages, size = [], 0
    for p in sorted(points, key=lambda p: p["tokens"]):
      size = max(size, int(p["local_cbs"]))
      stages.append((int(p["tokens"]), size))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"batch.probe_file={probe_file!r} is not a cbs.probe result "
                     f"(probes/probe.json): {type(e).__name__}: {e}") from None
  if not stages:
    raise ValueError(f"batch.probe_file={probe_file!r} holds no probed points")
  return tuple(stages)


def stages(batch_cfg: ml_collections.ConfigDict) -> tuple:
  if batch_cfg.schedule == "measured":
    return measured_stages(batch_cfg.probe_file)
  return tuple(batch_cfg.ramp)


def scheduled_size(batch_cfg: ml_collections.ConfigDict, tokens: int) -> int:
  """The size a token-indexed schedule asks for (the initial size for adaptive ones)."""
  if batch_cfg.schedule not in STAGEWISE:
    return batch_cfg.size
  if batch_cfg.schedule == "ramp" and batch_cfg.ramp_tokens > 0:
    fraction = min(tokens / batch_cfg.ramp_tokens, 1.0)
    return int(batch_cfg.size + fraction * (max_size(batch_cfg) - batch_cfg.size))
  size = batch_cfg.size
  for start, stage_size in stages(batch_cfg):
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
  if batch_cfg.schedule == "measured":
    measured_stages(batch_cfg.probe_file)  # raises if missing or malformed
  if batch_cfg.test_groups != -1 and batch_cfg.test_groups < 2:
    raise ValueError(f"batch.test_groups={batch_cfg.test_groups} must be >= 2 (or -1 = from the "
                     "layout)")
  if batch_cfg.gns_every < 0:
    raise ValueError(f"batch.gns_every={batch_cfg.gns_every} must be >= 0 (0 = off)")
  if not 0 <= batch_cfg.stats_ema < 1:
    raise ValueError(f"batch.stats_ema={batch_cfg.stats_ema} must be in [0, 1)")
  previous = -math.inf, 0
  for stage in batch_cfg.ramp:
    if len(stage) != 2 or stage[0] < previous[0] or stage[1] < previous[1]:
      raise ValueError(f"batch.ramp stage {tuple(stage)} must be (tokens, size) with tokens and "
                       "sizes non-decreasing")
    previous = stage
