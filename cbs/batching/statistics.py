"""Gradient-noise statistics from M group gradients, each the mean over m sequences, and the tests.

With G_j the group gradients and g their mean (batch B = M m):
  tr(Sigma) ~= (mean_j |G_j|^2 - |g|^2) / (1/m - 1/B)        (per-sequence gradient variance)
  |G|^2     ~= (B |g|^2 - m mean_j |G_j|^2) / (B - m)         (unbiased squared true gradient)
which are McCandlish et al.'s two-batch estimators with B_small = m, B_big = B, and equal the group
estimator m S^2 of Lau et al. The tests ask for the batch at which the estimated noise would pass:
  norm:           tr(Sigma) / (eta^2 |g|^2)
  inner product:  m Var_j(G_j . g) / (theta^2 |g|^4)
  orthogonality:  m sum_j |G_j - (G_j . g / |g|^2) g|^2 / (M - 1) / (nu^2 |g|^2)
  noise scale:    B_simple = tr(Sigma) / |G|^2.
Pure numpy on host scalars; the device computes only the sums.
"""

import numpy as np


def noise(group_sq_norm_mean: float, grad_sq_norm: float, groups: int, group_size: int) -> dict:
  """tr(Sigma) and the unbiased |G|^2 from one step's sums."""
  batch = groups * group_size
  trace = (group_sq_norm_mean - grad_sq_norm) / (1.0 / group_size - 1.0 / batch)
  true_sq = (batch * grad_sq_norm - group_size * group_sq_norm_mean) / (batch - group_size)
  return {"trace": float(trace), "true_sq_norm": float(true_sq), "grad_sq_norm": float(grad_sq_norm)}


def norm_test_size(trace: float, grad_sq_norm: float, eta: float) -> float:
  return trace / (eta ** 2 * grad_sq_norm)


def noise_scale(trace: float, true_sq_norm: float) -> float:
  return trace / true_sq_norm if true_sq_norm > 0 else float("inf")


def inner_product_size(dots_M: np.ndarray, grad_sq_norm: float, group_size: int,
                       theta: float) -> float:
  variance = group_size * np.var(dots_M, ddof=1)
  return float(variance / (theta ** 2 * grad_sq_norm ** 2))


def orthogonality_size(orth_sq_norms_M: np.ndarray, grad_sq_norm: float, group_size: int,
                       nu: float) -> float:
  variance = group_size * np.sum(orth_sq_norms_M) / (len(orth_sq_norms_M) - 1)
  return float(variance / (nu ** 2 * grad_sq_norm))


def smooth(previous: dict | None, current: dict, decay: float) -> dict:
  """EMA of each statistic separately (ratios are taken after smoothing); decay 0 = no smoothing."""
  if not previous or decay <= 0:
    return dict(current)
  return {k: decay * previous[k] + (1 - decay) * v for k, v in current.items()}
