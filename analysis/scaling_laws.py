"""Does the critical batch size scale with data or with model size? The joint law and its answer.

Zhang et al. 2024 separate the two by fitting CBS = c N^alpha D^beta over groups that vary model
size N and data size D independently, and the coupled law CBS ~ N^gamma along a Chinchilla-style
series (D proportional to N). The fit is least squares on log CBS; the intervals come from a
bootstrap that resamples the (batch, steps) points inside every group and refits every group's CBS
before refitting the law, so they carry the per-group fit uncertainty, which dominates with few
groups. When the budgets share their runs, `run_level_law` gives the answer with intervals that
resample runs instead.
"""

import dataclasses
import math

import numpy as np

from analysis import fits


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
