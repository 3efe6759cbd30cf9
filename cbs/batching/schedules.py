"""Batch-size schedules: the size a run asks for, from tokens seen (ramps) or gradient statistics (tests).

Every schedule is monotone non-decreasing and capped at `batch.max_size`: the controller keeps the
largest size asked for so far. `ramp` is stagewise (`batch.ramp` = ((tokens, size), ...)) or linear
in tokens (`batch.ramp_tokens` > 0, from `batch.size` to `batch.max_size`). `measured` is the
stagewise ramp that a `launch.probe` result implies (`batch.probe_file`): from each probed token
count on, the local critical batch size measured there (never decreasing). The adaptive schedules ask for
the batch their test says the current noise needs (see `statistics.py`).
"""

import dataclasses
import functools
import json
import math
from collections.abc import Callable

import ml_collections

from cbs.batching import statistics
from cbs.config import registry

LR_SCALINGS = registry.Registry(
  "batch.lr_scaling",
  {  # the entry: the exponent of size / initial
    "none": registry.Choice(0.0),
    "sqrt": registry.Choice(0.5),
    "linear": registry.Choice(1.0),
  },
  unknown_example="cube",
)


def max_size(batch_cfg: ml_collections.ConfigDict) -> int:
  """`batch.max_size`; -1 means the initial size (no growth), or the last measured stage."""
  if batch_cfg.max_size != -1:
    return batch_cfg.max_size
  if batch_cfg.schedule == "measured":
    return max(batch_cfg.size, measured_stages(batch_cfg.probe_file)[-1][1])
  return batch_cfg.size


def statistics_needed(batch_cfg: ml_collections.ConfigDict) -> str:
  """What the step must compute: none, the two norm sums, or also per-group inner products."""
  needed = SCHEDULES[batch_cfg.schedule].statistics
  return "norm" if needed == "none" and batch_cfg.gns_every > 0 else needed


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
    raise ValueError(
      f"batch.probe_file={probe_file!r} is not a cbs.probe result "
      f"(probes/probe.json): {type(e).__name__}: {e}"
    ) from None
  if not stages:
    raise ValueError(f"batch.probe_file={probe_file!r} holds no probed points")
  return tuple(stages)


def stages(batch_cfg: ml_collections.ConfigDict) -> tuple:
  if batch_cfg.schedule == "measured":
    return measured_stages(batch_cfg.probe_file)
  return tuple(batch_cfg.ramp)


def scheduled_size(batch_cfg: ml_collections.ConfigDict, tokens: int) -> int:
  """The size a token-indexed schedule asks for (the initial size for adaptive ones)."""
  if not SCHEDULES[batch_cfg.schedule].stagewise:
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
  return SCHEDULES[batch_cfg.schedule].requested(batch_cfg, smoothed)


def lr_multiplier(batch_cfg: ml_collections.ConfigDict, size: int) -> float:
  """Learning-rate factor for the current batch relative to the initial one."""
  return (size / batch_cfg.size) ** LR_SCALINGS[batch_cfg.lr_scaling].build


def _norm(cfg: ml_collections.ConfigDict, smoothed: dict) -> float:
  return statistics.norm_test_size(smoothed["trace"], smoothed["grad_sq_norm"], cfg.eta)


def _gns(cfg: ml_collections.ConfigDict, smoothed: dict) -> float:
  return cfg.gns_k * statistics.noise_scale(smoothed["trace"], smoothed["true_sq_norm"])


def _inner_product(cfg: ml_collections.ConfigDict, smoothed: dict) -> float:
  del cfg
  return smoothed["inner_product_size"]


def _augmented(cfg: ml_collections.ConfigDict, smoothed: dict) -> float:
  del cfg
  return max(smoothed["inner_product_size"], smoothed["orthogonality_size"])


def _check_ramp(config: ml_collections.ConfigDict) -> None:
  b = config.batch
  registry.require(
    len(b.ramp) > 0 or b.ramp_tokens > 0,
    "batch.schedule='ramp' has no stages: set batch.ramp ((tokens, size), ...) or "
    "batch.ramp_tokens with batch.max_size",
  )
  registry.require(
    b.ramp_tokens <= 0 or max_size(b) > b.size,
    f"batch.ramp_tokens={b.ramp_tokens} grows towards batch.max_size={b.max_size}, "
    f"which must be above batch.size={b.size}",
  )
  previous = -math.inf, 0
  for stage in b.ramp:
    registry.require(
      len(stage) == 2 and stage[0] >= previous[0] and stage[1] >= previous[1],
      f"batch.ramp stage {tuple(stage)} must be (tokens, size) with tokens and "
      "sizes non-decreasing",
    )
    previous = stage


def _check_measured(config: ml_collections.ConfigDict) -> None:
  try:
    measured_stages(config.batch.probe_file)
  except ValueError as e:
    raise registry.ConfigError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class BatchSchedule:
  """What a schedule needs from the step, and the batch it asks for."""

  statistics: str  # none | norm | full: what the step computes for its test
  stagewise: bool  # a size from the token count alone (`scheduled_size`)
  requested: Callable[[ml_collections.ConfigDict, dict], float] | None  # from test statistics
  check: registry.Check = registry.no_check
  examples: tuple[registry.Overrides, ...] = ()


SCHEDULES: registry.Registry[BatchSchedule] = registry.Registry(
  "batch.schedule",
  {
    "constant": BatchSchedule("none", False, None),
    "ramp": BatchSchedule(
      "none",
      True,
      None,
      _check_ramp,
      (
        {"batch.schedule": "ramp"},
        {"batch.schedule": "ramp", "batch.ramp_tokens": 1000},
        {"batch.schedule": "ramp", "batch.ramp": ((100, 64), (50, 128))},
      ),
    ),
    "measured": BatchSchedule(
      "none",
      True,
      None,
      _check_measured,
      ({"batch.schedule": "measured", "batch.probe_file": "/nonexistent/probe.json"},),
    ),
    "norm": BatchSchedule("norm", False, _norm),
    "inner_product": BatchSchedule("full", False, _inner_product),
    "augmented": BatchSchedule("full", False, _augmented),
    "gns": BatchSchedule("norm", False, _gns),
  },
  unknown_example="grow",
)


def adaptive(batch_cfg: ml_collections.ConfigDict) -> bool:
  """Whether the schedule grows the batch from test statistics."""
  return SCHEDULES[batch_cfg.schedule].requested is not None
