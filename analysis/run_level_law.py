"""The study's answer from its runs: the joint law CBS = c N^alpha D^beta of both definitions
(Definition 1's CBS and B_noise = b / a) with run-level intervals, the coupled exponent, the
design's power and a sentence.

Every data budget of a model size is measured from the same runs, so the intervals come from
`analysis.resample`'s draws of runs, fitted by `vector_fits` and widened for few seeds by
`intervals`; the power is `design_power`'s. The points-bootstrap law of independent groups is
`scaling_laws`.
"""

import math
from typing import NamedTuple

import numpy as np

from analysis import design_power
from analysis import intervals
from analysis import resample
from analysis import scaling_laws
from analysis import vector_fits

KINDS = {"cbs": "CBS (Definition 1)", "noise_scale": "B_noise = b / a"}


class NoiseFits(NamedTuple):
  """B_noise = b / a of every group fitted to a study's draws, groups flattened as (model, budget)
  in the last axes."""

  a: np.ndarray  # [W, D]: a of the estimate
  estimate: np.ndarray  # [W, D]
  samples: np.ndarray  # [S, W, D]
  variants: np.ndarray | None  # [cells, K, W, D]: one cell at one seed (None with one seed)


def _positive(values):
  return np.where(values > 0, values, np.nan)


def _law(
  n, d, est: np.ndarray, boot: np.ndarray, variants: np.ndarray | None, seeds: int, level: float
) -> dict:
  """Joint law and intervals of one kind of value: est [G], boot [S, G], variants [cells, K, G]
  (one cell at one seed: the intervals' degrees of freedom; None with one seed)."""
  coef = vector_fits.joint_many(n, d, _positive(est))
  coefs = vector_fits.joint_many(n, d, _positive(boot))
  dof = lambda changes: (
    intervals.effective_dof(changes, seeds)
    if variants is not None
    else np.full(changes.shape[2:], np.inf)
  )
  if variants is not None:
    coef_dof = dof(vector_fits.joint_many(n, d, _positive(variants)) - coef)
    value_dof = dof(variants - est)
  else:
    coef_dof, value_dof = np.full(3, np.inf), np.full(len(est), np.inf)
  out = {"c": float(np.exp(coef[0])), "alpha": float(coef[1]), "beta": float(coef[2])}
  for i, key in ((1, "alpha"), (2, "beta")):
    out[f"{key}_ci"] = list(intervals.interval(coefs[:, i], level, coef[i], coef_dof[i]))
    out[f"{key}_dof"] = float(coef_dof[i])
  out["values"] = [float(v) for v in est]
  out["values_ci"] = [
    list(intervals.interval(boot[:, g], level, est[g], value_dof[g])) for g in range(len(est))
  ]
  return out


def fit_draws(draws: resample.Draws) -> NoiseFits:
  """B_noise of the estimate, of every bootstrap sample and of every one-seed variant."""
  a_hat, noise_hat = vector_fits.fit_many(draws.batches, draws.estimate)
  _, noise_boot = vector_fits.fit_many(draws.batches, draws.samples, draws.weights)
  noise_variants = (
    None if draws.variants is None else vector_fits.fit_many(draws.batches, draws.variants)[1]
  )
  return NoiseFits(a_hat, noise_hat, noise_boot, noise_variants)


def run_noise(
  models: list[resample.ModelRuns],
  budgets: list[int],
  b_opt: int,
  metric: str,
  draws: resample.Draws,
  fitted: NoiseFits,
) -> tuple[float, float]:
  """(sigma, rho) of the runs between seeds (`resample.seed_noise`); with one seed the fits'
  residuals stand for the run noise, shared by none of its budgets."""
  sigma, rho = resample.seed_noise(models, budgets, b_opt, metric)
  if math.isnan(sigma):
    curve = fitted.a[..., None] * (
      1 + fitted.estimate[..., None] / np.asarray(draws.batches, np.float64)
    )
    sigma, rho = float(np.sqrt(np.nanmean((np.log(draws.estimate) - np.log(curve)) ** 2))), 0.0
  return sigma, rho


def kind_values(kind: str, fitted: NoiseFits, b_opt: int, threshold: float, samples: int):
  """One kind's values: estimate [G], samples [S, G] and variants [cells, K, G] (or None)."""
  convert = (
    (lambda v: v) if kind == "noise_scale" else (lambda v: vector_fits.cbs_of(v, b_opt, threshold))
  )
  est = convert(fitted.estimate).reshape(-1)
  smp = convert(fitted.samples).reshape(samples, -1)
  var = (
    None
    if fitted.variants is None
    else convert(fitted.variants).reshape(*fitted.variants.shape[:2], -1)
  )
  return est, smp, var


def _coupled(idx: list[int], n, d, est, smp, var, seeds: int, level: float) -> dict:
  """The exponent of N along the groups `idx` whose D / N ratio matches, with its interval."""
  slopes = vector_fits.slope_many(n[idx], _positive(smp[:, idx]))
  slope = float(vector_fits.slope_many(n[idx], est[idx]))
  dof = (
    math.inf
    if var is None
    else float(
      intervals.effective_dof(
        vector_fits.slope_many(n[idx], _positive(var[:, :, idx])) - slope, seeds
      )
    )
  )
  return {
    "exponent": slope,
    "exponent_ci": list(intervals.interval(slopes, level, slope, dof)),
    "points": [[float(n[i]), float(d[i])] for i in idx],
  }


def run_level_answer(
  runs: list,
  budgets: list[int],
  b_opt: int,
  threshold: float,
  metric: str,
  samples: int,
  level: float = 0.95,
  flagged: dict[tuple[float, float], str] | None = None,
) -> dict:
  """The answer from the study's runs: per kind (Definition 1's CBS, B_noise) the joint law with
  run-level intervals (`analysis.resample`), the coupled exponent, and the design's power.

  `flagged`: (N, D) -> why a group's value is doubtful (a failed guard); each law is refitted
  without them as a check (`without_flagged`). Leaving groups out by their measured value selects
  on the outcome, so that fit is a sensitivity check beside the answer, never the answer."""
  models = resample.model_runs(runs)
  draws = resample.run_tables(models, budgets, b_opt, metric, samples)
  fitted = fit_draws(draws)
  seeds = draws.seeds
  n = np.repeat([m.n_params for m in models], len(budgets)).astype(np.float64)
  d = np.tile(np.asarray(budgets, np.float64), len(models))
  sigma, rho = run_noise(models, budgets, b_opt, metric, draws, fitted)
  out = {
    "seeds": seeds,
    "samples": samples,
    "level": level,
    "sigma_run": sigma,
    "rho": rho,
    "resampled": "seeds in every cell" if seeds > 1 else "batch sizes of each model",
    "groups": [{"n_params": float(x), "tokens": float(y)} for x, y in zip(n, d)],
    "a": fitted.a.reshape(-1).tolist(),
  }
  chosen = scaling_laws.coupled_series(
    [{"n_params": x, "tokens": y, "index": i} for i, (x, y) in enumerate(zip(n, d))]
  )
  for kind in KINDS:
    est, smp, var = kind_values(kind, fitted, b_opt, threshold, samples)
    law = _law(n, d, est, smp, var, seeds, level)
    if len(chosen) >= 2:
      law["coupled"] = _coupled([g["index"] for g in chosen], n, d, est, smp, var, seeds, level)
    law["power"] = design_power.power(
      fitted.a, law, n, d, draws.batches, b_opt, threshold, kind, sigma, rho, seeds
    )
    law["without_flagged"] = _without(flagged or {}, n, d, est, smp, var, seeds, level)
    out[kind] = law
  out["sentence"] = power_verdict(out)
  return out


def _without(flagged: dict, n, d, est, smp, var, seeds: int, level: float) -> dict:
  """The joint law over the groups not in `flagged` ({} when none is flagged, or too few groups
  are left: two model sizes and two budgets, and more groups than coefficients)."""
  keep = np.array([(float(x), float(y)) not in flagged for x, y in zip(n, d)])
  if keep.all() or len(set(n[keep])) < 2 or len(set(d[keep])) < 2 or keep.sum() <= 3:
    return {}
  law = _law(
    n[keep], d[keep], est[keep], smp[:, keep], None if var is None else var[..., keep], seeds, level
  )
  return {key: law[key] for key in ("alpha", "alpha_ci", "beta", "beta_ci")} | {
    "left_out": [
      {"n_params": float(x), "tokens": float(y), "why": flagged[(float(x), float(y))]}
      for x, y, k in zip(n, d, keep)
      if not k
    ]
  }


def _trend(lo: float, hi: float) -> str:
  return "grows" if lo > 0 else "shrinks" if hi < 0 else "shows no significant trend"


def power_verdict(result: dict) -> str:
  """The answer sentence, from both definitions' intervals and the design's power."""
  parts = []
  for kind, label in KINDS.items():
    law = result[kind]
    (a_lo, a_hi), (b_lo, b_hi) = law["alpha_ci"], law["beta_ci"]
    pa, pb = law["power"]["alpha"], law["power"]["beta"]
    detect = lambda p: f"|x| >= {p:.2f}" if not math.isnan(p) else "no |x| <= 1"
    parts.append(
      f"{label}: {_trend(b_lo, b_hi)} with D (beta = {law['beta']:.2f} [{b_lo:.2f}, "
      f"{b_hi:.2f}]) and {_trend(a_lo, a_hi)} with N (alpha = {law['alpha']:.2f} [{a_lo:.2f}, "
      f"{a_hi:.2f}]); the design detects alpha {detect(pa)} and beta {detect(pb)}"
    )
  cbs = result["cbs"]
  data_first = cbs["beta_ci"][0] > 0 and not cbs["alpha_ci"][0] > cbs["beta_ci"][0]
  n_found = cbs["alpha_ci"][0] > 0 or cbs["alpha_ci"][1] < 0
  if data_first and not n_found:
    tail = (
      f"At this scale the CBS scales with data size and no trend in model size is seen, "
      f"one smaller than {cbs['power']['alpha']:.2f} in N could have been missed"
      if not math.isnan(cbs["power"]["alpha"])
      else "At this scale the CBS scales with data size; the design could not have seen a trend "
      "in model size"
    )
  elif data_first:
    tail = (
      "At this scale the CBS grows with data size and also with model size, less than with "
      "data size"
      if cbs["alpha_ci"][1] < cbs["beta_ci"][0]
      else "At this scale the CBS grows with both data size and model size"
    )
  else:
    tail = "At this scale the CBS does not grow measurably with data size"
  return tail + ". " + "; ".join(parts) + f" (80% power, {result['seeds']} seed(s) per run)."
