"""The joint law CBS = c N^alpha D^beta recovers known exponents from runs generated with them."""

import math

import numpy as np
import pytest

from analysis import run_level_law
from analysis import scaling_laws

B_OPT, T = 4, 0.2
BATCHES = [2, 4, 8, 16, 32, 64, 128, 256]


def fake_groups(alpha: float, beta: float, c: float = 0.5, noise: float = 0.03, seed: int = 0):
  """Groups whose steps follow a + b/B with B_noise set so the CBS is c N^alpha D^beta exactly,
  then perturbed by multiplicative noise (the scatter a real sweep has)."""
  rng = np.random.default_rng(seed)
  groups = []
  for n in (1e5, 4e5, 1.6e6):
    for d in (1e6, 4e6, 1.6e7):
      cbs = c * n**alpha * d**beta
      b_noise = (cbs - (1 + T) * B_OPT) / T  # B* = (1+t) B_opt + t b/a
      a = d / 1e4
      steps = [a * (1 + b_noise / b) * math.exp(noise * rng.standard_normal()) for b in BATCHES]
      groups.append(
        {"n_params": n, "tokens": d, "batch_sizes": BATCHES, "steps": steps, "true_cbs": cbs}
      )
  return groups


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.4), (0.25, 0.1)])
def test_joint_fit_recovers_known_exponents_within_its_intervals(alpha, beta):
  law = scaling_laws.bootstrap_joint(fake_groups(alpha, beta), B_OPT, T, samples=200)
  assert law.alpha_ci[0] <= alpha <= law.alpha_ci[1], (law.alpha, law.alpha_ci)
  assert law.beta_ci[0] <= beta <= law.beta_ci[1], (law.beta, law.beta_ci)
  assert abs(law.alpha - alpha) < 0.08 and abs(law.beta - beta) < 0.08
  assert law.beta_ci[1] - law.beta_ci[0] > 0  # noisy points give an interval of some width


def test_noiseless_joint_fit_is_exact():
  groups = fake_groups(0.1, 0.3, noise=0.0)
  law = scaling_laws.fit_joint(
    [g["n_params"] for g in groups], [g["tokens"] for g in groups], [g["true_cbs"] for g in groups]
  )
  assert law.alpha == pytest.approx(0.1, abs=1e-9) and law.beta == pytest.approx(0.3, abs=1e-9)


def test_the_joint_fit_needs_both_variables_to_vary():
  with pytest.raises(ValueError, match="at least two model sizes and two data budgets"):
    scaling_laws.fit_joint([1e5, 1e5], [1e6, 2e6], [10, 12])


def test_coupled_series_takes_one_group_per_size_at_a_common_d_over_n():
  groups = [{"n_params": n, "tokens": d} for n in (100, 400, 1600) for d in (200, 800, 3200, 12800)]
  chosen = scaling_laws.coupled_series(groups)
  assert [(g["n_params"], g["tokens"]) for g in chosen] in (
    [(100, 200), (400, 800), (1600, 3200)],
    [(100, 800), (400, 3200), (1600, 12800)],
  )


@pytest.mark.parametrize(
  "alpha_ci,beta_ci,agrees",
  [
    ((-0.05, 0.06), (0.1, 0.3), True),  # grows with D, no trend in N: the paper's answer
    ((0.2, 0.4), (0.1, 0.3), False),  # grows with N as much as with D
    ((-0.05, 0.06), (-0.1, 0.2), False),
  ],
)  # no significant trend in D
def test_the_sentence_says_whether_the_paper_is_reproduced(alpha_ci, beta_ci, agrees):
  sentence = scaling_laws.verdict(
    {"alpha": sum(alpha_ci) / 2, "alpha_ci": alpha_ci, "beta": sum(beta_ci) / 2, "beta_ci": beta_ci}
  )
  assert ("this agrees with the paper" in sentence) == agrees
  assert ("does not reproduce" in sentence) == (not agrees)


def test_the_check_without_flagged_groups_refits_only_the_others():
  """Values on an exact law c N^0.1 D^0.5, one group off it by 3x: the check leaves that group out
  and recovers the exponents exactly, while the fit over all groups does not."""
  n = np.repeat([1e4, 2e4, 4e4], 3)
  d = np.tile([64e3, 128e3, 256e3], 3)
  est = 2.0 * n**0.1 * d**0.5
  est[0] *= 3.0
  rng = np.random.default_rng(0)
  boot = est[None] * np.exp(0.01 * rng.standard_normal((50, 9)))
  check = run_level_law._without(
    {(1e4, 64e3): "2 batch sizes below its CBS"}, n, d, est, boot, None, 1, 0.95
  )
  assert check["alpha"] == pytest.approx(0.1, abs=1e-9)
  assert check["beta"] == pytest.approx(0.5, abs=1e-9)
  assert check["left_out"] == [
    {"n_params": 1e4, "tokens": 64e3, "why": "2 batch sizes below its CBS"}
  ]
  everything = run_level_law._law(n, d, est, boot, None, 1, 0.95)
  assert abs(everything["alpha"] - 0.1) > 0.05
  assert run_level_law._without({}, n, d, est, boot, None, 1, 0.95) == {}
