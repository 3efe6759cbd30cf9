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

NAMES = ("constant", "linear_to_zero", "cosine", "wsd", "rsqrt")
Schedule = Callable[[float | np.ndarray], float | np.ndarray]


def make(schedule_cfg: ml_collections.ConfigDict, peak_lr: float, train_tokens: int) -> Schedule:
  """lr(tokens) for `schedule_cfg.name`; vectorised over numpy arrays of token counts."""
  name = schedule_cfg.name
  if name not in NAMES:
    raise ValueError(f"schedule.name={name!r} is not one of: {', '.join(NAMES)}")
  warmup = float(schedule_cfg.warmup_tokens)
  total = float(train_tokens)
  decay_span = max(total - warmup, 1.0)

  def after_warmup(t):  # t: tokens since the end of warmup, >= 0
    progress = np.clip(t / decay_span, 0.0, 1.0)
    if name == "constant":
      return np.ones_like(t)
    if name == "linear_to_zero":
      return 1.0 - progress
    if name == "cosine":
      floor = schedule_cfg.final_fraction
      return floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * progress))
    if name == "wsd":
      decay = schedule_cfg.decay_fraction * total
      return np.clip((total - warmup - t) / max(decay, 1.0), 0.0, 1.0)
    timescale = schedule_cfg.rsqrt_tokens
    if timescale <= 0:
      timescale = warmup if warmup > 0 else 0.01 * total
    return np.sqrt(timescale / (timescale + np.minimum(t, decay_span)))

  def lr(tokens):
    t = np.asarray(tokens, dtype=np.float64)
    ramp = schedule_cfg.warmup_init + (1.0 - schedule_cfg.warmup_init) * t / max(warmup, 1.0)
    value = peak_lr * np.where(t < warmup, ramp, after_warmup(np.maximum(t - warmup, 0.0)))
    return float(value) if value.ndim == 0 else value

  return lr
