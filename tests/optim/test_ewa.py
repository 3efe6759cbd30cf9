"""Weight averages against a float64 numpy reference, including taus that change every step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cbs.optim import ewa


def cfg(decays=(0.9,), horizons=()):
  return ml_collections.ConfigDict(dict(decays=decays, horizons_tokens=horizons))


def test_names_and_taus():
  c = cfg((0.999, 0.99), (1_000_000,))
  assert ewa.names(c) == ["0.999", "0.99", "h1000000"]
  taus = ewa.taus(c, 2048)
  assert list(taus) == ["0.999", "0.99", "h1000000"]
  assert taus["h1000000"] == pytest.approx(np.exp(-2048 / 1e6))


def test_bias_corrected_average_matches_numpy_with_changing_batch_sizes():
  c = cfg((0.8,), (5000,))
  rng = np.random.default_rng(0)
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((4,))}
  state = ewa.init(params, c)
  thetas = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(10)]
  step_tokens = [512, 512, 1024, 4096, 4096, 256, 8192, 512, 512, 2048]
  update = jax.jit(ewa.update)
  for theta, tokens in zip(thetas, step_tokens):
    state = update(state, jax.tree.map(jnp.float32, theta), ewa.taus(c, tokens))
  for name in ewa.names(c):
    taus = [0.8] * 10 if name == "0.8" else [np.exp(-t / 5000) for t in step_tokens]
    # Reference: the explicit weighted sum sum_t w_t theta_t / sum_t w_t with
    # w_t = (1 - tau_t) prod_{s>t} tau_s.
    weights = [(1 - taus[t]) * np.prod(taus[t + 1 :]) for t in range(10)]
    for key in params:
      expected = sum(w * th[key] for w, th in zip(weights, thetas)) / sum(weights)
      np.testing.assert_allclose(
        ewa.averaged_params(state, name)[key], expected, rtol=1e-5, atol=1e-6
      )


def test_average_of_a_constant_is_that_constant():
  c = cfg((0.999,))
  state = ewa.init({"w": jnp.zeros(3)}, c)
  for _ in range(3):
    state = ewa.update(state, {"w": jnp.full(3, 1.5)}, ewa.taus(c, 1))
  np.testing.assert_allclose(ewa.averaged_params(state, "0.999")["w"], 1.5, rtol=1e-4)


@pytest.mark.parametrize("bad", [cfg((1.0,)), cfg((-0.1,)), cfg((), (0,))])
def test_bad_decays_are_rejected(bad):
  with pytest.raises(ValueError, match="ewa"):
    ewa.names(bad)
