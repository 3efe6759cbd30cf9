"""Unit-learning-rate optimizers scaled by a changing lr equal optax's own, and numpy references."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cbs.optim import optimizers as optim

LRS = [0.1, 0.05, 0.2, 0.01, 0.3]


def cfg(name, **kw):
  c = ml_collections.ConfigDict(
    dict(name=name, lr=1.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip=0.0, nesterov=False)
  )
  c.update(kw)
  return c


def problem():
  rng = np.random.default_rng(0)
  params = {
    "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
    "s": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
  }
  grads = [
    jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in LRS
  ]
  return params, grads


def run_ours(c, params, grads):
  tx = optim.make(c)
  state = tx.init(params)
  for lr, g in zip(LRS, grads):
    wd = c.weight_decay if optim.OPTIMIZERS[c.name].decays else 0.0
    params, state = optim.apply_updates(tx, g, state, params, jnp.float32(lr), jnp.float32(wd))
  return params


def run_optax(factory, params, grads, **kw):
  static = ("mask",) if "mask" in kw else ()
  tx = optax.inject_hyperparams(factory, static_args=static)(learning_rate=LRS[0], **kw)
  state = tx.init(params)
  for lr, g in zip(LRS, grads):
    state.hyperparams["learning_rate"] = jnp.float32(lr)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize(
  "name,factory,kw",
  [
    (
      "adamw",
      optax.adamw,
      dict(
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
      ),
    ),
    ("adam", optax.adam, dict(b1=0.9, b2=0.95, eps=1e-8)),
    ("sgd", optax.sgd, dict(momentum=0.9, nesterov=True)),
    (
      "lion",
      optax.lion,
      dict(
        b1=0.9, b2=0.95, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
      ),
    ),
  ],
)
def test_scaled_unit_lr_equals_optax_with_changing_lr(name, factory, kw):
  params, grads = problem()
  ours = run_ours(cfg(name, weight_decay=0.1, nesterov=True), params, grads)
  theirs = run_optax(factory, params, grads, **kw)
  for key in params:
    np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6)


def test_signum_matches_numpy():
  params, grads = problem()
  ours = run_ours(cfg("signum", weight_decay=0.1), params, grads)
  for key in params:
    p, m = np.asarray(params[key], np.float64), 0.0
    for lr, g in zip(LRS, grads):
      m = 0.9 * m + 0.1 * np.asarray(g[key])
      p = p - lr * (np.sign(m) + (0.1 * p if p.ndim >= 2 else 0.0))
    np.testing.assert_allclose(ours[key], p, rtol=1e-5)


def test_clipping_matches_numpy_global_norm():
  params, grads = problem()
  ours = run_ours(cfg("sgd", b1=0.0, clip=0.5), params, grads[:1])
  norm = np.sqrt(sum((np.asarray(g) ** 2).sum() for g in grads[0].values()))
  for key in params:
    expected = np.asarray(params[key]) - LRS[0] * np.asarray(grads[0][key]) * 0.5 / norm
    np.testing.assert_allclose(ours[key], expected, rtol=1e-5)


def test_weight_decay_spares_vectors():
  params, _ = problem()
  zeros = jax.tree.map(jnp.zeros_like, params)
  out = run_ours(cfg("adamw", weight_decay=0.5), params, [zeros] * len(LRS))
  np.testing.assert_array_equal(out["s"], params["s"])
  np.testing.assert_allclose(
    out["w"], params["w"] * np.prod([1 - 0.5 * lr for lr in LRS]), rtol=1e-5
  )


def test_adafactor_decreases_a_quadratic():
  params = {"w": jnp.ones((4, 3))}
  tx = optim.make(cfg("adafactor"))
  state = tx.init(params)
  for _ in range(20):
    params, state = optim.apply_updates(tx, params, state, params, jnp.float32(0.05))
  assert float(jnp.abs(params["w"]).max()) < 0.5


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match="optimizer.name='adamx' is not one of"):
    optim.make(cfg("adamx"))


def test_weight_decay_from_the_timescale_follows_the_batch_size():
  c = cfg("adamw", wd_timescale=0.2)
  tokens, lr, run = 64 * 512, 1e-3, 10**9
  assert optim.weight_decay_at(c, tokens, lr, run) == pytest.approx(32768 / (1e-3 * 0.2 * 1e9))
  # Batch doubles at the same lr: lambda doubles, so lr * lambda * steps-per-run stays fixed.
  assert optim.weight_decay_at(c, 2 * tokens, lr, run) == pytest.approx(0.32768)
  # Batch doubles with sqrt lr scaling: lambda grows by 2 / sqrt(2).
  assert optim.weight_decay_at(c, 2 * tokens, lr * 2**0.5, run) == pytest.approx(0.16384 * 2**0.5)
  timescale = lambda t, eta: (t / (eta * optim.weight_decay_at(c, t, eta, run))) / run
  assert timescale(tokens, lr) == pytest.approx(timescale(4 * tokens, 3 * lr)) == pytest.approx(0.2)
  assert (
    optim.weight_decay_at(cfg("adamw", weight_decay=0.05, wd_timescale=0.0), tokens, lr, run)
    == 0.05
  )
