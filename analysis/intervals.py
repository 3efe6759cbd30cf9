"""Bootstrap intervals widened for the few degrees of freedom of a few seeds.

With 2 seeds each cell's variance rests on one degree of freedom, and the exponents' variance on a
few cells: a percentile interval is too narrow, so its ends are moved away from the estimate by
t(dof) / z, dof from Satterthwaite's formula over the cells' shares (`effective_dof`).
"""

import math

import numpy as np

from analysis import fits


def interval(
  samples: np.ndarray, level: float = 0.95, estimate: float = math.nan, dof: float = math.inf
) -> tuple[float, float]:
  """Percentile interval of bootstrap `samples`, nan ones dropped ((nan, nan) if none is left),
  its ends moved away from `estimate` by t(dof) / z at `level` when the variance the bootstrap
  sees has `dof` degrees of freedom (`effective_dof`)."""
  samples = np.asarray(samples, np.float64)
  samples = samples[np.isfinite(samples)]
  if not samples.size:
    return (math.nan, math.nan)
  lo, hi = fits.percentile_interval(samples, level)
  if math.isfinite(dof) and math.isfinite(estimate):
    widen = t_quantile(level, dof) / t_quantile(level, math.inf)
    lo, hi = estimate + widen * (lo - estimate), estimate + widen * (hi - estimate)
  return (lo, hi)


def t_quantile(level: float, dof: float) -> float:
  """Two-sided `level` quantile of Student's t with `dof` degrees of freedom (Cornish-Fisher
  expansion around the normal quantile: within 0.5% for dof >= 3)."""
  p = 0.5 + level / 2  # the normal quantile by bisection on erf, no extra dependency
  lo, hi = 0.0, 10.0
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
  z = (lo + hi) / 2
  if not math.isfinite(dof):
    return z
  dof = max(dof, 1.0)
  return (
    z
    + (z**3 + z) / (4 * dof)
    + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
    + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
  )


def effective_dof(changes: np.ndarray, seeds: int) -> np.ndarray:
  """Satterthwaite's degrees of freedom of a bootstrap variance that sums the cells' variances.

  `changes` [cells, K, ...]: how a statistic moves when one cell's mean is replaced by one seed's
  (rescaled as the bootstrap does). A cell's share of the variance is their mean square / K,
  estimated from K - 1 degrees of freedom; with few cells carrying the variance a percentile
  interval is too narrow (2 seeds: one degree of freedom per cell), and t(dof) corrects it.
  """
  share = np.nanmean(np.asarray(changes, np.float64) ** 2, axis=1) / seeds
  total = np.nansum(share, axis=0)
  return total**2 / np.maximum(np.nansum(share**2, axis=0) / (seeds - 1), 1e-300)
