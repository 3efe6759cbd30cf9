"""Seed tables: steps to target per (model, budget, batch, learning rate, seed), simulated or
drawn, and how they become one table per sample (mean over seeds, lowest over learning rates).

A bootstrap mean over K drawn seeds has (K-1)/K of the variance of the mean over K seeds, so in
every cell the drawn mean's deviation from the full mean is scaled by sqrt(K/(K-1)) (in log space)
before the lowest over learning rates and the fits (`rescaled`).
"""

import math

import numpy as np


def pick_seeds(rng: np.random.Generator, seed_steps: np.ndarray, samples: int) -> np.ndarray:
  """Bootstrap tables [S, W, D, B] from seed tables [W, D, B, R, K]: in every (W, B, R) cell K
  seeds drawn with replacement, shared by every budget; mean over seeds, lowest over rates."""
  w, _, b, r, k = seed_steps.shape
  idx = rng.integers(0, k, (samples, w, 1, b, r, k))
  drawn = np.take_along_axis(seed_steps[None], idx, axis=-1).mean(-1)
  return best_over_rates(rescaled(drawn, seed_steps.mean(-1)[None], k), seeds=False)


def rescaled(drawn, full, seeds: int):
  """A bootstrap mean over K drawn seeds has (K-1)/K of the variance of the mean over the K seeds:
  its deviation from the full mean, in log space, is scaled by sqrt(K/(K-1)) to restore it."""
  scale = math.sqrt(seeds / (seeds - 1)) if seeds > 1 else 1.0
  return np.exp(np.log(full) + scale * (np.log(drawn) - np.log(full)))


def one_seed_variants(seed_steps: np.ndarray) -> np.ndarray:
  """Tables [W*B*R, K, W, D, B] from seed tables [W, D, B, R, K]: each cell in turn holding one
  seed's steps (rescaled as a draw of K copies of it), every other cell its mean over seeds."""
  w, d, b, r, k = seed_steps.shape
  full = seed_steps.mean(-1)  # [W, D, B, R]
  out = np.broadcast_to(full, (w * b * r, k, w, d, b, r)).copy()
  for i, (wi, bi, ri) in enumerate(np.ndindex(w, b, r)):
    out[i, :, wi, :, bi, ri] = rescaled(seed_steps[wi, :, bi, ri, :].T, full[wi, :, bi, ri], k)
  return best_over_rates(out, seeds=False)


def best_over_rates(seed_steps: np.ndarray, seeds: bool = True) -> np.ndarray:
  """[..., B, R, K] -> [..., B]: mean over seeds (nan if a seed has nan), lowest over rates
  ([..., B, R] already averaged when not `seeds`)."""
  mean = seed_steps.mean(-1) if seeds else seed_steps
  with np.errstate(all="ignore"):
    return np.where(
      np.isnan(mean).all(-1), np.nan, np.nanmin(np.where(np.isnan(mean), np.inf, mean), -1)
    )


def simulate(
  rng: np.random.Generator,
  a: np.ndarray,
  b_noise: np.ndarray,
  batches,
  sims: int,
  seeds: int,
  sigma_run: float,
  sigma_budget: float,
  rate_penalty=(0.0,),
) -> np.ndarray:
  """Seed tables [sims, W, D, B, R, K] of steps = a (1 + b_noise / B) per (W, D) group (`a`,
  `b_noise` [W, D]), times exp(rate penalty) per learning rate, times log-normal noise: `sigma_run`
  per run (shared by its budgets: the correlation a study has) and `sigma_budget` per budget."""
  w, d = a.shape
  batch = np.asarray(batches, np.float64)
  r = len(rate_penalty)
  clean = np.log(a)[:, :, None] + np.log1p(b_noise[:, :, None] / batch)
  noise = sigma_run * rng.standard_normal(
    (sims, w, 1, batch.size, r, seeds)
  ) + sigma_budget * rng.standard_normal((sims, w, d, batch.size, r, seeds))
  penalty = np.asarray(rate_penalty, np.float64)[:, None]
  return np.exp(clean[None, :, :, :, None, None] + penalty + noise)
