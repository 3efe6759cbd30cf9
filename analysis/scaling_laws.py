"""Does the critical batch size scale with data or with model size? The joint law and its answer.

Zhang et al. 2024 separate the two by fitting CBS = c N^alpha D^beta over groups that vary model
size N and data size D independently, and the coupled law CBS ~ N^gamma along a Chinchilla-style
series (D proportional to N). The fit is least squares on log CBS; the intervals come from a
bootstrap that resamples the (batch, steps) points inside every group and refits every group's CBS
before refitting the law, so they carry the per-group fit uncertainty, which dominates with few
groups.
"""

import dataclasses
import math

import numpy as np

from analysis import fits
from analysis import resample


@dataclasses.dataclass(frozen=True)
class JointLaw:
  c: float
  alpha: float  # exponent of N at fixed D
  beta: float  # exponent of D at fixed N
  alpha_ci: tuple[float, float] = (math.nan, math.nan)
  beta_ci: tuple[float, float] = (math.nan, math.nan)

  def __call__(self, n, d) -> np.ndarray:
    return self.c * np.asarray(n, np.float64) ** self.alpha * np.asarray(d, np.float64) ** self.beta


def fit_joint(n, d, cbs) -> JointLaw:
  """log CBS = log c + alpha log N + beta log D by least squares; needs N and D each to vary."""
  log_n, log_d = np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64))
  if np.unique(log_n).size < 2 or np.unique(log_d).size < 2:
    raise ValueError(
      "the joint law needs at least two model sizes and two data budgets, got "
      f"N={sorted(set(np.exp(log_n).round()))}, D={sorted(set(np.exp(log_d).round()))}"
    )
  design = np.stack([np.ones_like(log_n), log_n, log_d], axis=1)
  (log_c, alpha, beta), *_ = np.linalg.lstsq(
    design, np.log(np.asarray(cbs, np.float64)), rcond=None
  )
  return JointLaw(c=float(np.exp(log_c)), alpha=float(alpha), beta=float(beta))


def bootstrap_joint(
  groups: list[dict],
  b_opt: float,
  threshold: float = 0.2,
  samples: int = 1000,
  seed: int = 0,
  level: float = 0.95,
) -> JointLaw:
  """The joint law over groups {"n_params", "tokens", "batch_sizes", "steps"}, with intervals."""
  n, d = [g["n_params"] for g in groups], [g["tokens"] for g in groups]
  law = fit_joint(
    n,
    d,
    [
      fits.critical_batch_size(fits.fit_steps(g["batch_sizes"], g["steps"]), b_opt, threshold)
      for g in groups
    ],
  )
  rng = np.random.default_rng(seed)
  alphas, betas = [], []
  for _ in range(samples):
    resampled = [
      fits.resampled_cbs(rng, g["batch_sizes"], g["steps"], b_opt, threshold) for g in groups
    ]
    if any(v is None for v in resampled):
      continue
    sample = fit_joint(n, d, resampled)
    alphas.append(sample.alpha)
    betas.append(sample.beta)
  if not alphas:
    return law
  return dataclasses.replace(
    law,
    alpha_ci=fits.percentile_interval(alphas, level),
    beta_ci=fits.percentile_interval(betas, level),
  )


def coupled_series(groups: list[dict]) -> list[dict]:
  """One group per model size whose D / N ratio is closest to the ratio shared by the most sizes:
  the Chinchilla-style series in which N and D grow together."""
  sizes = sorted({g["n_params"] for g in groups})
  if len(sizes) < 2:
    return []
  ratios = sorted({round(math.log2(g["tokens"] / g["n_params"]) * 4) / 4 for g in groups})

  def series(ratio: float) -> list[dict]:
    chosen = []
    for n in sizes:
      options = [g for g in groups if g["n_params"] == n]
      best = min(options, key=lambda g: abs(math.log2(g["tokens"] / n) - ratio))
      if abs(math.log2(best["tokens"] / n) - ratio) <= 0.5:
        chosen.append(best)
    return chosen

  def spread(chosen: list[dict]) -> float:
    logs = [math.log2(g["tokens"] / g["n_params"]) for g in chosen]
    return max(logs) - min(logs)

  return max((series(r) for r in ratios), key=lambda s: (len(s), -spread(s)))


def answer(groups: list[dict], b_opt: float, threshold: float = 0.2, samples: int = 1000) -> dict:
  """The study's answer: the joint exponents with intervals, the coupled exponent, a verdict.

  `groups` are measured groups (analysis.measure) with a fitted CBS and their best points.
  """
  usable = [
    {
      "n_params": g["n_params"],
      "tokens": g["tokens"],
      "batch_sizes": [b["batch_size"] for b in g["best"]],
      "steps": [b["steps"] for b in g["best"]],
    }
    for g in groups
    if "cbs" in g
  ]
  law = bootstrap_joint(usable, b_opt, threshold, samples)
  out = {
    "alpha": law.alpha,
    "alpha_ci": list(law.alpha_ci),
    "beta": law.beta,
    "beta_ci": list(law.beta_ci),
    "c": law.c,
    "groups": len(usable),
  }
  coupled = coupled_series(usable)
  if len(coupled) >= 2:
    line = fits.bootstrap_scaling(coupled, "n_params", b_opt, threshold, samples)
    out["coupled"] = {
      "exponent": line.exponent,
      "exponent_ci": list(line.ci),
      "points": [[g["n_params"], g["tokens"]] for g in coupled],
    }
  out["sentence"] = verdict(out)
  return out


def verdict(result: dict) -> str:
  """One sentence: does this scale agree with 'CBS grows with D and barely with N'?"""
  a_lo, a_hi = result["alpha_ci"]
  b_lo, b_hi = result["beta_ci"]
  grows_with_d = b_lo > 0
  n_effect = "grows" if a_lo > 0 else "shrinks" if a_hi < 0 else "shows no significant trend"
  data_dominates = grows_with_d and (a_lo <= 0 <= a_hi or a_hi < b_lo)
  numbers = (
    f"beta = {result['beta']:.2f} [{b_lo:.2f}, {b_hi:.2f}] in D at fixed N, "
    f"alpha = {result['alpha']:.2f} [{a_lo:.2f}, {a_hi:.2f}] in N at fixed D"
  )
  if data_dominates:
    return (
      f"At this scale the CBS grows with data size and {n_effect} with model size ({numbers}): "
      "this agrees with the paper's conclusion that the CBS scales primarily with data size."
    )
  d_effect = "grows" if grows_with_d else "shrinks" if b_hi < 0 else "shows no significant trend"
  return (
    f"At this scale the CBS {d_effect} with data size and {n_effect} with model size "
    f"({numbers}): this does not reproduce the paper's conclusion that the CBS scales "
    "primarily with data size."
  )


# --- The study's answer from its runs: both definitions, run-level intervals, power ---------------

KINDS = {"cbs": "CBS (Definition 1)", "noise_scale": "B_noise = b / a"}
POWER = 0.8  # a design "would have detected" an exponent it finds significant this often


def _positive(values):
  return np.where(values > 0, values, np.nan)


def _law(
  n, d, est: np.ndarray, boot: np.ndarray, variants: np.ndarray | None, seeds: int, level: float
) -> dict:
  """Joint law and intervals of one kind of value: est [G], boot [S, G], variants [cells, K, G]
  (one cell at one seed: the intervals' degrees of freedom; None with one seed)."""
  coef = resample.joint_many(n, d, _positive(est))
  coefs = resample.joint_many(n, d, _positive(boot))
  dof = lambda changes: (
    resample.effective_dof(changes, seeds)
    if variants is not None
    else np.full(changes.shape[2:], np.inf)
  )
  if variants is not None:
    coef_dof = dof(resample.joint_many(n, d, _positive(variants)) - coef)
    value_dof = dof(variants - est)
  else:
    coef_dof, value_dof = np.full(3, np.inf), np.full(len(est), np.inf)
  out = {"c": float(np.exp(coef[0])), "alpha": float(coef[1]), "beta": float(coef[2])}
  for i, key in ((1, "alpha"), (2, "beta")):
    out[f"{key}_ci"] = list(resample.interval(coefs[:, i], level, coef[i], coef_dof[i]))
    out[f"{key}_dof"] = float(coef_dof[i])
  out["values"] = [float(v) for v in est]
  out["values_ci"] = [
    list(resample.interval(boot[:, g], level, est[g], value_dof[g])) for g in range(len(est))
  ]
  return out


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
      tables = resample.simulate(
        rng,
        a,
        np.maximum(noise, 1e-3),
        batches,
        sims,
        seeds,
        sigma * math.sqrt(rho),
        sigma * math.sqrt(1 - rho),
      )
      _, bn = resample.fit_many(batches, resample.best_over_rates(tables))
      value = bn if kind == "noise_scale" else resample.cbs_of(bn, b_opt, threshold)
      coef = resample.joint_many(n, d, np.where(value > 0, value, np.nan).reshape(sims, -1))
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
  batches, estimate, seeds = draws.batches, draws.estimate, draws.seeds
  a_hat, noise_hat = resample.fit_many(batches, estimate)  # [W, D]
  _, noise_boot = resample.fit_many(batches, draws.samples, draws.weights)  # [S, W, D]
  noise_variants = (
    None if draws.variants is None else resample.fit_many(batches, draws.variants)[1]
  )  # [cells, K, W, D]
  n = np.repeat([m.n_params for m in models], len(budgets)).astype(np.float64)
  d = np.tile(np.asarray(budgets, np.float64), len(models))
  sigma, rho = resample.seed_noise(models, budgets, b_opt, metric)
  if math.isnan(sigma):  # one seed: the fits' residuals stand for the run noise
    fitted = a_hat[..., None] * (1 + noise_hat[..., None] / np.asarray(batches, np.float64))
    sigma, rho = float(np.sqrt(np.nanmean((np.log(estimate) - np.log(fitted)) ** 2))), 0.0
  out = {
    "seeds": seeds,
    "samples": samples,
    "level": level,
    "sigma_run": sigma,
    "rho": rho,
    "resampled": "seeds in every cell" if seeds > 1 else "batch sizes of each model",
    "groups": [{"n_params": float(x), "tokens": float(y)} for x, y in zip(n, d)],
    "a": a_hat.reshape(-1).tolist(),
  }
  chosen = coupled_series(
    [{"n_params": x, "tokens": y, "index": i} for i, (x, y) in enumerate(zip(n, d))]
  )
  for kind in KINDS:
    convert = (
      (lambda v: v) if kind == "noise_scale" else (lambda v: resample.cbs_of(v, b_opt, threshold))
    )
    est = convert(noise_hat).reshape(-1)
    smp = convert(noise_boot).reshape(samples, -1)
    var = (
      None
      if noise_variants is None
      else convert(noise_variants).reshape(*noise_variants.shape[:2], -1)
    )
    law = _law(n, d, est, smp, var, seeds, level)
    if len(chosen) >= 2:
      idx = [g["index"] for g in chosen]
      slopes = resample.slope_many(n[idx], _positive(smp[:, idx]))
      slope = float(resample.slope_many(n[idx], est[idx]))
      dof = (
        math.inf
        if var is None
        else float(
          resample.effective_dof(
            resample.slope_many(n[idx], _positive(var[:, :, idx])) - slope, seeds
          )
        )
      )
      law["coupled"] = {
        "exponent": slope,
        "exponent_ci": list(resample.interval(slopes, level, slope, dof)),
        "points": [[float(n[i]), float(d[i])] for i in idx],
      }
    law["power"] = power(a_hat, law, n, d, batches, b_opt, threshold, kind, sigma, rho, seeds)
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
