"""Noise estimators against closed forms and against per-example gradients computed independently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cbs import models
from cbs import step
from cbs.batching import statistics
from configs import tiny


def test_estimators_recover_known_trace_and_gradient_norm():
  # Per-example gradients g_i ~ N(mu, diag(s^2)): tr(Sigma) = sum s^2, |G|^2 = |mu|^2.
  rng = np.random.default_rng(0)
  dim, groups, group_size, trials = 50, 8, 16, 400
  mu, s = rng.normal(size=dim) * 0.3, rng.uniform(0.5, 1.5, size=dim)
  traces, true_norms = [], []
  for _ in range(trials):
    g = mu + s * rng.normal(size=(groups, group_size, dim))
    group_means = g.mean(axis=1)
    est = statistics.noise((group_means ** 2).sum(1).mean(), (g.mean(axis=(0, 1)) ** 2).sum(),
                           groups, group_size)
    traces.append(est["trace"])
    true_norms.append(est["true_sq_norm"])
  standard_error = np.std(traces) / np.sqrt(trials)
  assert np.mean(traces) == pytest.approx((s ** 2).sum(), abs=4 * standard_error)
  assert np.mean(true_norms) == pytest.approx((mu ** 2).sum(),
                                              abs=4 * np.std(true_norms) / np.sqrt(trials))


def test_trace_equals_the_group_variance_estimator():
  rng = np.random.default_rng(1)
  group_means = rng.normal(size=(4, 10))
  g = group_means.mean(0)
  s2 = ((group_means - g) ** 2).sum() / (4 - 1)  # S^2 of Lau et al.: sum_j |G_j - g|^2 / (M - 1)
  est = statistics.noise((group_means ** 2).sum(1).mean(), (g ** 2).sum(), 4, 8)
  assert est["trace"] == pytest.approx(8 * s2)


def test_test_sizes_follow_their_formulas():
  assert statistics.norm_test_size(trace=2.0, grad_sq_norm=0.5, eta=0.1) == pytest.approx(400)
  dots = np.array([1.0, 2.0, 3.0])
  assert statistics.inner_product_size(dots, 2.0, 4, 0.5) == pytest.approx(4 * 1.0 / (0.25 * 4))
  assert statistics.orthogonality_size(np.array([1.0, 1.0, 2.0]), 2.0, 4, 1.0) == pytest.approx(
      4 * 4.0 / 2 / 2.0)
  assert statistics.smooth({"a": 1.0}, {"a": 3.0}, 0.75) == {"a": 1.5}


def test_scanned_step_sums_match_per_example_gradients():
  config = tiny.get_config()
  config.model.num_layers = 1
  model = models.build_model(config.model, 32, nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, 32, size=(8, 17))
  batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
           "weights": jnp.ones((8, 16), jnp.float32)}

  def example_grad(inputs, targets):
    one = {"inputs": inputs[None], "targets": targets[None], "weights": jnp.ones((1, 16))}
    return jax.grad(lambda p: step.loss_sums(p, graphdef, one)[0] / 16)(params)

  per_example = jax.vmap(example_grad)(batch["inputs"], batch["targets"])
  flat = np.concatenate([np.asarray(x).reshape(8, -1) for x in jax.tree.leaves(per_example)], 1)
  # 4 groups over 2 "devices": device d holds rows 4d..4d+3, group j takes rows {2j, 2j+1} of each.
  members = [[0, 1, 4, 5], [2, 3, 6, 7]]
  group_means = np.stack([flat[m].mean(0) for m in members])
  g = flat.mean(0)
  grads, metrics = step.gradients(params, graphdef, batch, groups=2, data_parallel=2,
                                  statistics="full")
  flat_grads = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(grads)])
  np.testing.assert_allclose(flat_grads, g, rtol=1e-4, atol=1e-7)
  assert float(metrics["grad_sq_norm"]) == pytest.approx((g ** 2).sum(), rel=1e-4)
  assert float(metrics["group_sq_norm_mean"]) == pytest.approx(
      (group_means ** 2).sum(1).mean(), rel=1e-4)
  np.testing.assert_allclose(metrics["group_dots"], group_means @ g, rtol=1e-4)
  orth = group_means - np.outer(group_means @ g / (g @ g), g)
  np.testing.assert_allclose(metrics["group_orth_sq_norms"], (orth ** 2).sum(1), rtol=1e-3,
                             atol=1e-6)
