"""CBS fits against closed forms: a + b/B recovery, Definition 1, power laws with bootstrap."""

import numpy as np
import pytest

from analysis import fits

BATCHES = np.array([16, 32, 64, 128, 256, 512, 1024, 2048, 4096], dtype=float)


@pytest.mark.parametrize("a,b", [(1000.0, 256_000.0), (37.0, 900.0), (5000.0, 1e8)])
def test_fit_recovers_a_and_b_from_exact_steps(a, b):
  fit = fits.fit_steps(BATCHES, a + b / BATCHES)
  np.testing.assert_allclose([fit.a, fit.b], [a, b], rtol=1e-4)
  assert fit.rmse_log < 1e-5


def test_fit_with_noise_is_close_and_minimises_log_error():
  rng = np.random.default_rng(0)
  steps = (2000 + 512_000 / BATCHES) * np.exp(rng.normal(0, 0.03, BATCHES.size))
  fit = fits.fit_steps(BATCHES, steps)
  assert fit.b_noise == pytest.approx(256, rel=0.15)
  # No nearby (a, b) has a smaller squared error on log steps.
  sse = lambda a, b: np.sum((np.log(steps) - np.log(a + b / BATCHES)) ** 2)
  for da in (0.99, 1.01):
    for db in (0.99, 1.01):
      assert sse(fit.a * da, fit.b * db) >= sse(fit.a, fit.b)


def test_fit_of_batch_independent_steps_has_zero_b():
  fit = fits.fit_steps(BATCHES, np.full(BATCHES.size, 700.0))
  assert fit.b == 0 and fit.a == pytest.approx(700)


def test_closed_form_cbs_is_where_steps_exceed_linear_scaling_by_the_threshold():
  fit = fits.StepsFit(a=1000.0, b=256_000.0, rmse_log=0.0)
  for b_opt, t in ((256, 0.2), (64, 0.1), (128, 0.5)):
    cbs = fits.critical_batch_size(fit, b_opt, t)
    linear = lambda batch: fit.steps(b_opt) * b_opt / batch
    # Definition 1 by bisection on the fitted curve, independent of the closed form.
    lo, hi = float(b_opt), 1e9
    for _ in range(200):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if fit.steps(mid) <= (1 + t) * linear(mid) else (lo, mid)
    assert cbs == pytest.approx(lo, rel=1e-9)
  assert fits.critical_batch_size(fit) == pytest.approx(1.2 * 256 + 256_000 / 1000 / 5)


def test_fit_rejects_a_single_batch_size():
  with pytest.raises(ValueError, match="two distinct batch sizes"):
    fits.fit_steps([64, 64], [10, 11])


def test_power_law_and_bootstrap_recover_a_known_exponent():
  # Groups whose CBS follows 3 D^0.4 exactly; per-group steps carry 2% noise.
  rng = np.random.default_rng(1)
  groups = []
  for d in (1e6, 4e6, 1.6e7, 6.4e7):
    cbs = 3 * d**0.4
    a = 100.0
    b = (cbs - 1.2 * 256) * 5 * a  # B* = 1.2 B_opt + b / (5a)
    steps = (a + b / BATCHES) * np.exp(rng.normal(0, 0.02, BATCHES.size))
    groups.append({"tokens": d, "batch_sizes": BATCHES, "steps": steps})
  law = fits.bootstrap_scaling(groups, "tokens", samples=300, seed=0)
  assert law.exponent == pytest.approx(0.4, abs=0.03)
  lo, hi = law.ci
  assert lo < 0.4 < hi and hi - lo < 0.2
  exact = fits.fit_power_law([1, 10, 100], [2, 2 * 10**0.7, 2 * 100**0.7])
  assert (exact.d, exact.exponent) == (pytest.approx(2), pytest.approx(0.7))
