"""Noise estimators against closed forms and against per-example gradients computed independently."""

import numpy as np
import pytest

from cbs.batching import statistics


def group_sums(group_means_MxP: np.ndarray) -> dict:
  """What the device returns for these groups, computed directly (means over the M groups)."""
  g = group_means_MxP.mean(0)
  r = group_means_MxP - g
  return {
    "grad_sq_norm": g @ g,
    "group_sq_norm_mean": (group_means_MxP**2).sum(1).mean(),
    "group_dev_sq_norm_mean": (r**2).sum(1).mean(),
    "group_dot_dev_mean": (r @ g).mean(),
    "group_dot_dev_sq_mean": ((r @ g) ** 2).mean(),
  }


def requested_sizes(sums: dict, groups: int, group_size: int) -> dict:
  noise = statistics.noise(sums["group_sq_norm_mean"], sums["grad_sq_norm"], groups, group_size)
  return {
    "norm": statistics.norm_test_size(noise["trace"], sums["grad_sq_norm"], eta=0.1),
    "inner_product": statistics.inner_product_size(
      sums["group_dot_dev_mean"],
      sums["group_dot_dev_sq_mean"],
      sums["grad_sq_norm"],
      groups,
      group_size,
      theta=0.1,
    ),
    "trace": noise["trace"],
    "true_sq_norm": noise["true_sq_norm"],
  }


def gaussian_group_means(rng, mu, s, batch: int, groups: int, trials: int) -> np.ndarray:
  """[trials, M, P] means of M groups of per-example gradients g_i ~ N(mu, diag(s^2))."""
  g = mu + s * rng.normal(size=(trials, groups, batch // groups, len(mu)))
  return g.mean(axis=2)


@pytest.mark.parametrize("groups", [2, 8, 32])
def test_estimators_recover_known_trace_and_gradient_norm(groups):
  # Per-example gradients g_i ~ N(mu, diag(s^2)): tr(Sigma) = sum s^2, |G|^2 = |mu|^2, any M.
  rng = np.random.default_rng(groups)
  dim, batch, trials = 50, 64, 400
  mu, s = rng.normal(size=dim) * 0.3, rng.uniform(0.5, 1.5, size=dim)
  estimates = [
    requested_sizes(group_sums(means), groups, batch // groups)
    for means in gaussian_group_means(rng, mu, s, batch, groups, trials)
  ]
  traces = np.array([e["trace"] for e in estimates])
  true_norms = np.array([e["true_sq_norm"] for e in estimates])
  assert traces.mean() == pytest.approx((s**2).sum(), abs=4 * traces.std() / np.sqrt(trials))
  assert true_norms.mean() == pytest.approx(
    (mu**2).sum(), abs=4 * true_norms.std() / np.sqrt(trials)
  )


def test_spread_of_the_requested_size_shrinks_with_the_groups():
  # Fixed batch of 64 Gaussian per-example gradients cut into M groups; M = 64 is per-example.
  rng = np.random.default_rng(3)
  dim, batch, trials = 20, 64, 300
  mu, s = rng.normal(size=dim) * 0.2, rng.uniform(0.5, 1.5, size=dim)
  spreads = {}
  for groups in (2, 4, 16, 64):
    sizes = [
      requested_sizes(group_sums(means), groups, batch // groups)
      for means in gaussian_group_means(rng, mu, s, batch, groups, trials)
    ]
    spreads[groups] = {
      name: np.subtract(*np.percentile([x[name] for x in sizes], [90, 10]))
      / np.median([x[name] for x in sizes])
      for name in ("norm", "inner_product")
    }
  for name in ("norm", "inner_product"):
    widths = [spreads[m][name] for m in (2, 4, 16, 64)]
    assert widths == sorted(widths, reverse=True), (name, widths)
  # The inner-product variance has M - 1 degrees of freedom: at M = 2 it is a one-sample chi-square.
  assert spreads[2]["inner_product"] > 3 * spreads[64]["inner_product"]
  assert spreads[2]["inner_product"] > 2 * spreads[2]["norm"]


def test_trace_equals_the_group_variance_estimator():
  rng = np.random.default_rng(1)
  group_means = rng.normal(size=(4, 10))
  g = group_means.mean(0)
  s2 = ((group_means - g) ** 2).sum() / (4 - 1)  # S^2 of Lau et al.: sum_j |G_j - g|^2 / (M - 1)
  est = statistics.noise((group_means**2).sum(1).mean(), (g**2).sum(), 4, 8)
  assert est["trace"] == pytest.approx(8 * s2)


def test_test_sizes_follow_their_formulas():
  assert statistics.norm_test_size(trace=2.0, grad_sq_norm=0.5, eta=0.1) == pytest.approx(400)
  # From the sums, against the formulas on the group gradients themselves.
  rng = np.random.default_rng(4)
  means = rng.normal(size=(5, 7)) + 1.0
  g, sums, m, theta, nu = means.mean(0), group_sums(means), 4, 0.5, 0.7
  dots = means @ g
  orth = means - np.outer(dots / (g @ g), g)
  inner = statistics.inner_product_size(
    sums["group_dot_dev_mean"], sums["group_dot_dev_sq_mean"], g @ g, 5, m, theta
  )
  assert inner == pytest.approx(m * np.var(dots, ddof=1) / (theta**2 * (g @ g) ** 2))
  orthogonal = statistics.orthogonality_size(
    sums["group_dev_sq_norm_mean"], sums["group_dot_dev_sq_mean"], g @ g, 5, m, nu
  )
  assert orthogonal == pytest.approx(m * (orth**2).sum() / (5 - 1) / (nu**2 * (g @ g)))
  assert statistics.smooth({"a": 1.0}, {"a": 3.0}, 0.75) == {"a": 1.5}
