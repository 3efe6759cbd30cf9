"""The least-squares testbed: simulation vs the closed-form expectation, CBS growth with data."""

import numpy as np
import pytest

from analysis import theory
from cbs.theory import least_squares as ls


def test_simulated_sgd_risk_matches_the_closed_form_expectation():
  p = ls.Problem(dim=32, a=1.5, b=1.5, noise=0.5)
  lrs = [0.05, 0.3]
  expected = ls.expected_risk(p, lrs, batch=4, steps=150)
  simulated = ls.simulate(p, lrs, batch=4, steps=150, seeds=512)
  np.testing.assert_allclose(simulated[:, ::10], expected[:, ::10], rtol=0.06)
  # Step 1 by hand: E[R_1] = sum_i lambda_i m_i' with m' from the recursion at m = w*^2.
  lam, m = p.spectrum(), p.target() ** 2
  risk = lam @ m
  first = (1 - 0.05 * lam) ** 2 * m + 0.05**2 / 4 * lam * (lam * m + risk + 0.25)
  assert expected[0, 0] == pytest.approx(lam @ first)


def test_adam_with_averaging_runs_and_learns():
  p = ls.Problem(dim=16)
  plain = ls.simulate(p, [0.1], batch=8, steps=600, seeds=4, optimizer="adam")
  averaged = ls.simulate(p, [0.1], batch=8, steps=600, seeds=4, optimizer="adam", ewa=0.98)
  initial = p.spectrum() @ p.target() ** 2
  # At a constant lr Adam stalls at a noise floor; averaging the iterates goes below it.
  assert plain[0, -1] < 0.1 * initial and averaged[0, -1] < 0.5 * plain[0, -1]


def test_crossing_and_smoothing():
  curve = np.array([[8.0, 4.0, 2.0, 1.0]])
  assert theory.first_crossing(curve[0], 2 * np.sqrt(2)) == pytest.approx(2.5)  # steps 2 and 3
  np.testing.assert_allclose(ls.smooth(curve, width=0.0), curve)


def test_testbed_cbs_grows_with_data_as_predicted():
  result = theory.run(
    ls.Problem(dim=64, a=2.0, b=2.0),
    batches=(1, 2, 4, 8, 16, 32, 64),
    budgets=(512, 1024, 2048, 4096),
    seeds=4,
  )
  exact = [result["expected"]["groups"][str(d)]["cbs"] for d in result["budgets"]]
  assert all(later > earlier for earlier, later in zip(exact, exact[1:]))
  assert result["expected"]["exponent"] == pytest.approx(result["predicted_exponent"], abs=0.1)
  simulated = [result["simulated"]["groups"][str(d)]["cbs"] for d in result["budgets"]]
  assert simulated[-1] > simulated[0]
