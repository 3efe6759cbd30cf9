"""Fits of the critical-batch-size protocol (Zhang et al. 2024, Definition 1 and section 3).

Steps to target follow `f(B) = a + b / B` (McCandlish et al.'s S = S_min (1 + B_noise / B) with
S_min = a, B_noise = b / a), fitted by least squares on log f. The CBS is the largest B whose steps
stay within (1 + t) of linear scaling from B_opt: a + b/B <= (1+t)(a B_opt + b)/B, i.e.
B* = (1 + t) B_opt + t b / a. Scaling laws B* = d x^exponent are straight lines in log-log space.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class StepsFit:
  a: float  # S_min: steps needed at infinite batch
  b: float  # sequences x steps of the linear-scaling regime
  rmse_log: float  # root-mean-square residual of log steps

  @property
  def b_noise(self) -> float:
    return self.b / self.a

  def steps(self, batch_size) -> np.ndarray:
    return self.a + self.b / np.asarray(batch_size, dtype=np.float64)


def _sse(log_steps: np.ndarray, batch: np.ndarray, b_noise: np.ndarray):
  """For each candidate B_noise, log a is the mean residual (least squares); returns (log a, sse)."""
  shape = np.log1p(b_noise[:, None] / batch[None, :])
  log_a = np.mean(log_steps[None, :] - shape, axis=1)
  return log_a, np.sum((log_steps[None, :] - log_a[:, None] - shape) ** 2, axis=1)


def fit_steps(batch_sizes, steps) -> StepsFit:
  """Least-squares fit of log steps = log(a + b / B) with a > 0, b >= 0.

  One-dimensional in B_noise = b / a (log a has a closed form for each B_noise): a log grid, then
  repeatedly finer grids around the best point, so the fit needs no starting point and cannot
  diverge. b = 0 (steps independent of B) is a candidate too.
  """
  batch = np.asarray(batch_sizes, dtype=np.float64)
  log_steps = np.log(np.asarray(steps, dtype=np.float64))
  if batch.size < 2 or np.unique(batch).size < 2:
    raise ValueError(
      f"fitting a + b/B needs at least two distinct batch sizes, got {batch.tolist()}"
    )
  if np.any(batch <= 0) or not np.all(np.isfinite(log_steps)):
    raise ValueError(f"batch sizes and steps must be positive, got {batch.tolist()}, {steps}")
  grid = np.linspace(np.log(batch.min()) - 8, np.log(batch.max()) + 8, 161)
  for _ in range(6):
    _, err = _sse(log_steps, batch, np.exp(grid))
    i = int(np.argmin(err))
    step = grid[1] - grid[0]
    grid = np.linspace(grid[i] - step, grid[i] + step, 41)
  candidates = np.array([0.0, float(np.exp(grid[20]))])
  log_a, err = _sse(log_steps, batch, candidates)
  best = int(np.argmin(err))
  a = float(np.exp(log_a[best]))
  return StepsFit(a=a, b=a * candidates[best], rmse_log=float(np.sqrt(err[best] / batch.size)))


def critical_batch_size(fit: StepsFit, b_opt: float = 256, threshold: float = 0.2) -> float:
  """B* = (1 + t) B_opt + t b / a: the largest batch within (1 + t) of linear scaling."""
  return (1 + threshold) * b_opt + threshold * fit.b / fit.a


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  d: float
  exponent: float
  ci: tuple[float, float] = (float("nan"), float("nan"))  # bootstrap interval of the exponent
  d_ci: tuple[float, float] = (float("nan"), float("nan"))

  def __call__(self, x) -> np.ndarray:
    return self.d * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_power_law(x, y) -> PowerLaw:
  """y = d x^exponent by least squares on log y against log x."""
  log_x, log_y = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
  if np.unique(log_x).size < 2:
    raise ValueError(
      f"a power law needs at least two distinct x values, got {np.exp(log_x).tolist()}"
    )
  exponent, log_d = np.polyfit(log_x, log_y, 1)
  return PowerLaw(d=float(np.exp(log_d)), exponent=float(exponent))


def resampled_cbs(
  rng: np.random.Generator, batch_sizes, steps, b_opt: float, threshold: float
) -> float | None:
  """The CBS of one bootstrap sample of the (batch, steps) points; None if it has one batch size."""
  idx = rng.integers(0, len(steps), len(steps))
  batch = np.asarray(batch_sizes, dtype=np.float64)[idx]
  if np.unique(batch).size < 2:
    return None
  fit = fit_steps(batch, np.asarray(steps, dtype=np.float64)[idx])
  return critical_batch_size(fit, b_opt, threshold)


def percentile_interval(values, level: float) -> tuple[float, float]:
  """The central `level` interval of bootstrap values (at least one)."""
  tail = 100 * (1 - level) / 2
  return tuple(float(v) for v in np.percentile(values, [tail, 100 - tail]))


def bootstrap_cbs(
  batch_sizes,
  steps,
  b_opt: float = 256,
  threshold: float = 0.2,
  samples: int = 1000,
  seed: int = 0,
  level: float = 0.95,
) -> tuple[float, float]:
  """Percentile interval of one group's fitted CBS, resampling its (batch, steps) points.

  Each point is the minimum over a batch size's runs, so resampling points carries both the noise
  of single points and the fit's dependence on which batch sizes were swept. (nan, nan) without
  samples or with too few distinct batch sizes.
  """
  rng = np.random.default_rng(seed)
  found = [
    c
    for c in (resampled_cbs(rng, batch_sizes, steps, b_opt, threshold) for _ in range(samples))
    if c is not None
  ]
  return percentile_interval(found, level) if found else (float("nan"), float("nan"))


def bootstrap_scaling(
  groups: list[dict],
  key: str,
  b_opt: float = 256,
  threshold: float = 0.2,
  samples: int = 1000,
  seed: int = 0,
  level: float = 0.95,
) -> PowerLaw:
  """CBS = d key^exponent across groups, with bootstrap intervals.

  Each group is {key: value, "batch_sizes": [...], "steps": [...]}. A bootstrap sample resamples the
  (batch, steps) points within every group, refits every group's CBS, then refits the law: the
  interval carries the uncertainty of the per-group fits, which dominates with few groups.
  """
  xs = [g[key] for g in groups]
  cbs = [
    critical_batch_size(fit_steps(g["batch_sizes"], g["steps"]), b_opt, threshold) for g in groups
  ]
  law = fit_power_law(xs, cbs)
  rng = np.random.default_rng(seed)
  exponents, ds = [], []
  for _ in range(samples):
    resampled = []
    for g in groups:
      value = resampled_cbs(rng, g["batch_sizes"], g["steps"], b_opt, threshold)
      if value is None:
        break
      resampled.append(value)
    else:
      sample_law = fit_power_law(xs, resampled)
      exponents.append(sample_law.exponent)
      ds.append(sample_law.d)
  if not exponents:
    return law
  return dataclasses.replace(
    law, ci=percentile_interval(exponents, level), d_ci=percentile_interval(ds, level)
  )
