"""Gradient-noise statistics from M group gradients, each the mean over m sequences, and the tests.

With G_j the group gradients, g their mean (batch B = M m) and r_j = G_j - g:
  tr(Sigma) ~= (mean_j |G_j|^2 - |g|^2) / (1/m - 1/B)        (per-sequence gradient variance)
  |G|^2     ~= (B |g|^2 - m mean_j |G_j|^2) / (B - m)         (unbiased squared true gradient)
which are McCandlish et al.'s two-batch estimators with B_small = m, B_big = B, and equal the group
estimator m S^2 of Lau et al. The tests ask for the batch at which the estimated noise would pass:
  norm:           tr(Sigma) / (eta^2 |g|^2)
  inner product:  m Var_j(G_j . g) / (theta^2 |g|^4),  Var_j(G_j . g) = Var_j(r_j . g)
  orthogonality:  m sum_j (|r_j|^2 - (r_j . g)^2 / |g|^2) / (M - 1) / (nu^2 |g|^2)
  noise scale:    B_simple = tr(Sigma) / |G|^2.
The orthogonality sum is sum_j |G_j - (G_j . g / |g|^2) g|^2 written with r_j; the device returns
the means over groups of |G_j|^2, |r_j|^2, r_j . g and (r_j . g)^2 (see `cbs.step`).

Degrees of freedom: every variance here is a sample variance over M groups, M - 1 degrees of
freedom. For the inner-product test it is the variance of one scalar, so with Gaussian gradients
its estimate is (scaled) chi-square with M - 1 degrees of freedom: relative spread
sqrt(2 / (M - 1)), about 141% at M = 2 and 37% at M = 16. The trace sums such variances over every parameter, about
(M - 1) (tr Sigma)^2 / tr(Sigma^2) degrees of freedom, so the norm test is much steadier at the
same M. Ratios are taken after smoothing (`smooth`), which adds degrees of freedom over steps.
Pure numpy on host scalars; the device computes only the sums.
"""

import numpy as np


def noise(group_sq_norm_mean: float, grad_sq_norm: float, groups: int, group_size: int) -> dict:
  """tr(Sigma) and the unbiased |G|^2 from one step's sums."""
  batch = groups * group_size
  trace = (group_sq_norm_mean - grad_sq_norm) / (1.0 / group_size - 1.0 / batch)
  true_sq = (batch * grad_sq_norm - group_size * group_sq_norm_mean) / (batch - group_size)
  return {
    "trace": float(trace),
    "true_sq_norm": float(true_sq),
    "grad_sq_norm": float(grad_sq_norm),
  }


def norm_test_size(trace: float, grad_sq_norm: float, eta: float) -> float:
  return trace / (eta**2 * grad_sq_norm)


def noise_scale(trace: float, true_sq_norm: float) -> float:
  return trace / true_sq_norm if true_sq_norm > 0 else float("inf")


def inner_product_size(
  dot_dev_mean: float,
  dot_dev_sq_mean: float,
  grad_sq_norm: float,
  groups: int,
  group_size: int,
  theta: float,
) -> float:
  """From the group means of r_j . g and (r_j . g)^2."""
  variance = group_size * groups / (groups - 1) * (dot_dev_sq_mean - dot_dev_mean**2)
  return float(variance / (theta**2 * grad_sq_norm**2))


def orthogonality_size(
  dev_sq_norm_mean: float,
  dot_dev_sq_mean: float,
  grad_sq_norm: float,
  groups: int,
  group_size: int,
  nu: float,
) -> float:
  """From the group means of |r_j|^2 and (r_j . g)^2."""
  orthogonal_sq_sum = groups * (dev_sq_norm_mean - dot_dev_sq_mean / grad_sq_norm)
  variance = group_size * orthogonal_sq_sum / (groups - 1)
  return float(variance / (nu**2 * grad_sq_norm))


def finite(statistics: dict) -> bool:
  """Whether every value is finite: a NaN/Inf step must not enter the EMA (it would stay there)."""
  return all(np.isfinite(v) for v in statistics.values())


def smooth(previous: dict | None, current: dict, decay: float) -> dict:
  """EMA of each statistic separately (ratios are taken after smoothing); decay 0 = no smoothing."""
  if not previous or decay <= 0:
    return dict(current)
  return {k: decay * previous[k] + (1 - decay) * v for k, v in current.items()}
