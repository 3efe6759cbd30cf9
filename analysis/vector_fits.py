"""Least-squares fits vectorised over rows: thousands of bootstrap samples or simulated studies
fitted at once, each row by the same least squares on log steps as `fits.fit_steps`, and the joint
law's and the coupled series' fits in log space."""

import numpy as np


def fit_many(batch_sizes, steps, weights=None) -> tuple[np.ndarray, np.ndarray]:
  """(a, b_noise) of steps = a (1 + b_noise / B) for every row of `steps` [..., B], by least squares
  on log steps with b_noise >= 0 (`fits.fit_steps`, row by row); `weights` [..., B] count each
  point (a bootstrap that draws batch sizes), nan steps are left out, and a row with fewer than
  two batch sizes gives nan. The error of every row at every candidate B_noise is three matrix
  products, so thousands of rows fit at once."""
  batch = np.asarray(batch_sizes, np.float64)
  steps = np.asarray(steps, np.float64)
  weights = np.ones(steps.shape) if weights is None else np.broadcast_to(weights, steps.shape)
  shape = steps.shape[:-1]
  a, b_noise = _fit_rows(
    batch,
    np.log(steps).reshape(-1, batch.size),
    np.asarray(weights, np.float64).reshape(-1, batch.size),
  )
  return a.reshape(shape), b_noise.reshape(shape)


def _fit_rows(batch: np.ndarray, log_steps: np.ndarray, weights: np.ndarray):
  used = np.isfinite(log_steps) & (weights > 0)
  w = np.where(used, weights, 0.0)
  y = np.where(used, log_steps, 0.0)
  count = np.maximum(w.sum(1), 1e-300)
  sum_y, sum_yy = (w * y).sum(1), (w * y * y).sum(1)

  def sse(shape):  # shape [G, B] (every row) or [M, G, B] (one grid per row) -> error [M, G]
    if shape.ndim == 2:
      sum_s, cross, square = w @ shape.T, (w * y) @ shape.T, w @ (shape**2).T
    else:
      sum_s = np.einsum("mb,mgb->mg", w, shape)
      cross = np.einsum("mb,mgb->mg", w * y, shape)
      square = np.einsum("mb,mgb->mg", w, shape**2)
    log_a = (sum_y[:, None] - sum_s) / count[:, None]
    return sum_yy[:, None] - 2 * cross + square - count[:, None] * log_a**2

  rows = np.arange(y.shape[0])
  coarse = np.linspace(np.log(batch.min()) - 8, np.log(batch.max()) + 8, 161)
  err = sse(np.log1p(np.exp(coarse)[:, None] / batch[None, :]))
  centre = coarse[np.argmin(err, 1)]
  grid = centre[:, None] + (coarse[1] - coarse[0]) * np.linspace(-1, 1, 21)[None, :]  # [M, 21]
  err = sse(np.log1p(np.exp(grid)[:, :, None] / batch[None, None, :]))
  i = np.clip(np.argmin(err, 1), 1, grid.shape[1] - 2)
  left, mid, right = err[rows, i - 1], err[rows, i], err[rows, i + 1]
  curvature = left - 2 * mid + right
  offset = np.where(curvature > 0, 0.5 * (left - right) / np.where(curvature > 0, curvature, 1), 0)
  best = grid[rows, i] + np.clip(offset, -1, 1) * (grid[:, 1] - grid[:, 0])  # parabola's vertex
  shape = np.log1p(np.exp(best)[:, None] / batch[None, :])  # [M, B]
  log_a = (sum_y - (w * shape).sum(1)) / count
  fine = (w * (y - shape - log_a[:, None]) ** 2).sum(1)
  flat_log_a = sum_y / count
  flat = (w * (y - flat_log_a[:, None]) ** 2).sum(1)
  zero = flat <= fine
  a = np.exp(np.where(zero, flat_log_a, log_a))
  b_noise = np.where(zero, 0.0, np.exp(best))
  ordered = np.sort(np.where(used, batch[None, :], np.nan), 1)
  bad = (used.any(1) + (np.diff(ordered, axis=1) > 0).sum(1)) < 2
  return np.where(bad, np.nan, a), np.where(bad, np.nan, b_noise)


def joint_many(n, d, values) -> np.ndarray:
  """[..., 3] = (log c, alpha, beta) of log values = log c + alpha log N + beta log D for every
  row of `values` [..., G] (nan where a row has a nan)."""
  design = np.stack(
    [np.ones(len(n)), np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64))], 1
  )
  coef = np.log(np.asarray(values, np.float64)) @ np.linalg.pinv(design).T
  return coef


def slope_many(x, values) -> np.ndarray:
  """Slope of log values against log x for every row of `values` [..., G]."""
  log_x = np.log(np.asarray(x, np.float64))
  centred = log_x - log_x.mean()
  return (np.log(np.asarray(values, np.float64)) @ centred) / (centred @ centred)


def cbs_of(b_noise, b_opt: float, threshold: float):
  """Definition 1's CBS from B_noise = b / a (`fits.critical_batch_size`)."""
  return (1 + threshold) * b_opt + threshold * np.asarray(b_noise)
