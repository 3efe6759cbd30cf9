"""The power of a study's design: the smallest exponents of the joint law it would detect.

Studies are simulated with the measured a of every group, the measured run noise, the same seeds,
batch sizes, N and D, and a true law scaled to the measured values; an exponent counts as detected
when the simulated studies find it beyond their interval's half-width often enough (`POWER`).
"""

import math

import numpy as np

from analysis import seed_tables
from analysis import vector_fits

POWER = 0.8  # a design "would have detected" an exponent it finds significant this often


def power(
  a: np.ndarray,
  law: dict,
  n,
  d,
  batches,
  b_opt: float,
  threshold: float,
  kind: str,
  sigma: float,
  rho: float,
  seeds: int,
  sims: int = 200,
  seed: int = 1,
) -> dict:
  """Smallest |alpha| and |beta| this design detects with probability POWER: studies simulated with
  the measured a per group, the measured noise (sigma per run, a share rho of it shared by the
  run's budgets) and the same seeds, batch sizes, N and D; true law c N^x D^beta_hat (for alpha) or
  c N^alpha_hat D^x (for beta), scaled to the measured values; detected when the fitted exponent is
  beyond the half-width of the study's own interval (`law`'s, when it has one) or else 1.96 x its
  spread under x = 0, on the right side. nan where no x up to 1 is detected."""
  rng = np.random.default_rng(seed)
  log_n, log_d = np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64))
  grid = np.geomspace(0.005, 1.0, 36)
  mean_log = float(np.mean(np.log(np.maximum(law["values"], 1e-9))))
  out = {}
  for which, axis, other, other_exp in (
    ("alpha", log_n, log_d, law["beta"]),
    ("beta", log_d, log_n, law["alpha"]),
  ):

    def fitted(x):
      log_v = x * (axis - axis.mean()) + other_exp * (other - other.mean()) + mean_log
      values = np.exp(log_v).reshape(a.shape)
      noise = values if kind == "noise_scale" else (values - (1 + threshold) * b_opt) / threshold
      tables = seed_tables.simulate(
        rng,
        a,
        np.maximum(noise, 1e-3),
        batches,
        sims,
        seeds,
        sigma * math.sqrt(rho),
        sigma * math.sqrt(1 - rho),
      )
      _, bn = vector_fits.fit_many(batches, seed_tables.best_over_rates(tables))
      value = bn if kind == "noise_scale" else vector_fits.cbs_of(bn, b_opt, threshold)
      coef = vector_fits.joint_many(n, d, np.where(value > 0, value, np.nan).reshape(sims, -1))
      return coef[:, 1 if which == "alpha" else 2]

    lo, hi = law.get(f"{which}_ci", (math.nan, math.nan))
    critical = (hi - lo) / 2 if math.isfinite(hi - lo) else 1.96 * float(np.nanstd(fitted(0.0)))
    found = math.nan
    for x in grid:
      if np.nanmean(fitted(x) > critical) >= POWER:
        found = float(x)
        break
    out[which] = found
  return out
