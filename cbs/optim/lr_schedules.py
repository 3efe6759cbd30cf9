"""Learning-rate schedules as functions of tokens seen, evaluated on the host in float64.

Tokens, not steps, because the batch size may change during a run and runs at different batch sizes
must be comparable; host-side float64 because token counts outgrow int32. Every schedule starts with
a linear warmup from `warmup_init * peak` to `peak` over `warmup_tokens`, then follows its shape to
the end of the run (`train_tokens`) and holds its final value beyond it. This module computes numbers;
it does not touch optimizers or devices.
"""

from collections.abc import Callable

import ml_collections
import numpy as np

from cbs.config import registry

Schedule = Callable[[float | np.ndarray], float | np.ndarray]
# A shape after warmup: (schedule config, tokens since warmup ended, tokens from then to the end,
# train_tokens) -> the fraction of the peak.
Shape = Callable[[ml_collections.ConfigDict, np.ndarray, float, float], np.ndarray]


def _constant(cfg, t, span, total):
  del cfg, span, total
  return np.ones_like(t)


def _linear_to_zero(cfg, t, span, total):
  del cfg, total
  return 1.0 - np.clip(t / span, 0.0, 1.0)


def _cosine(cfg, t, span, total):
  del total
  progress = np.clip(t / span, 0.0, 1.0)
  return cfg.final_fraction + (1.0 - cfg.final_fraction) * 0.5 * (1.0 + np.cos(np.pi * progress))


def _wsd(cfg, t, span, total):
  decay = cfg.decay_fraction * total
  return np.clip((span - t) / max(decay, 1.0), 0.0, 1.0)


def _rsqrt(cfg, t, span, total):
  timescale = cfg.rsqrt_tokens
  if timescale <= 0:
    timescale = cfg.warmup_tokens if cfg.warmup_tokens > 0 else 0.01 * total
  return np.sqrt(timescale / (timescale + np.minimum(t, span)))


def _check_wsd(config: ml_collections.ConfigDict) -> None:
  s = config.schedule
  decay = s.decay_fraction * config.train_tokens
  registry.require(
    s.warmup_tokens + decay <= config.train_tokens,
    f"schedule.decay_fraction={s.decay_fraction}: the wsd decay ({decay:.0f} tokens) "
    f"and schedule.warmup_tokens={s.warmup_tokens} are longer than the run "
    f"(train_tokens={config.train_tokens})",
  )


SCHEDULES: registry.Registry[registry.Choice[Shape]] = registry.Registry(
  "schedule.name",
  {
    "constant": registry.Choice(_constant),
    "linear_to_zero": registry.Choice(_linear_to_zero),
    "cosine": registry.Choice(_cosine),
    "wsd": registry.Choice(
      _wsd,
      _check_wsd,
      (
        {"schedule.name": "wsd", "schedule.warmup_tokens": 500_000, "schedule.decay_fraction": 0.6},
      ),
    ),
    "rsqrt": registry.Choice(_rsqrt),
  },
  unknown_example="cosin",
)


def make(schedule_cfg: ml_collections.ConfigDict, peak_lr: float, train_tokens: int) -> Schedule:
  """lr(tokens) for `schedule_cfg.name`; vectorised over numpy arrays of token counts."""
  shape = SCHEDULES[schedule_cfg.name].build
  warmup = float(schedule_cfg.warmup_tokens)
  total = float(train_tokens)
  decay_span = max(total - warmup, 1.0)

  def lr(tokens):
    t = np.asarray(tokens, dtype=np.float64)
    ramp = schedule_cfg.warmup_init + (1.0 - schedule_cfg.warmup_init) * t / max(warmup, 1.0)
    after = shape(schedule_cfg, np.maximum(t - warmup, 0.0), decay_span, total)
    value = peak_lr * np.where(t < warmup, ramp, after)
    return float(value) if value.ndim == 0 else value

  return lr
