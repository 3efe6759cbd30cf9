"""Scanned blocks (`model.scan_layers`): the same function as the unrolled stack, traced once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from cbs import models
from cbs import train_state
from cbs.optim import optimizers as optim
from cbs.parallel import sharding
from configs import base
from configs import tiny

VOCAB = 24
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 12)).astype(np.int32)


def model_cfg(name, **kw):
  c = base.get_config().model
  c.update(dict(name=name, num_layers=3, d_model=32, num_heads=4, mlp_dim=48))
  c.update(kw)
  return c


def unrolled_and_scanned(name, **kw):
  """An unrolled model with random norm scales, and a scanned model holding the same weights."""
  unrolled = models.build_model(model_cfg(name, **kw), VOCAB, nnx.Rngs(1))
  params = nnx.state(unrolled, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(2), 100))
  nnx.update(
    unrolled, jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), params)
  )
  scanned = models.build_model(model_cfg(name, scan_layers=True, **kw), VOCAB, nnx.Rngs(0))
  nnx.update(scanned, stacked(nnx.to_pure_dict(nnx.state(unrolled, nnx.Param))))
  return unrolled, scanned


def stacked(pure: dict) -> dict:
  """Unrolled parameters (`blocks` -> {0: ..., 1: ...}) in the scanned layout (`layers`)."""
  out = {k: v for k, v in pure.items() if k != "blocks"}
  blocks = [pure["blocks"][i] for i in sorted(pure["blocks"])]
  out["layers"] = jax.tree.map(lambda *layers: jnp.stack(layers), *blocks)
  return out


def loss_and_grads(model):
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(p):
    logits = nnx.merge(graphdef, p)(jnp.asarray(TOKENS))
    return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

  return params, jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("name,remat", [("paper", "none"), ("llama", "none"), ("paper", "full")])
def test_scanned_model_computes_the_unrolled_function(name, remat):
  unrolled, scanned = unrolled_and_scanned(name, remat=remat)
  np.testing.assert_allclose(
    scanned(jnp.asarray(TOKENS)), unrolled(jnp.asarray(TOKENS)), rtol=1e-5, atol=1e-5
  )
  _, (value, grads) = loss_and_grads(unrolled)
  _, (value_s, grads_s) = loss_and_grads(scanned)
  np.testing.assert_allclose(value_s, value, rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
    nnx.to_pure_dict(grads_s),
    stacked(nnx.to_pure_dict(grads)),
  )


def test_one_adamw_step_with_decay_and_mup_scaling_matches_unrolled():
  # Weight decay and muP's hidden-matrix lr must skip the stacked norm scales ([layers, d] arrays)
  # exactly as they skip the unrolled vectors.
  cfg = base.get_config().optimizer
  tx = optim.make(cfg, hidden_lr_scale=0.25)
  unrolled, scanned = unrolled_and_scanned("paper")
  new = []
  for model in (unrolled, scanned):
    params, (_, grads) = loss_and_grads(model)
    params_new, _ = optim.apply_updates(tx, grads, tx.init(params), params, 1e-2, 0.5)
    new.append(nnx.to_pure_dict(params_new))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new[1], stacked(new[0])
  )
  scales = new[1]["layers"]["attn_norm"]["scale"]
  assert scales.shape == (3, 32) and not np.allclose(scales, 1.0)


def test_the_scanned_program_does_not_grow_with_depth():
  def matmuls(num_layers, scan):
    model = models.build_model(
      model_cfg("paper", num_layers=num_layers, scan_layers=scan), VOCAB, nnx.Rngs(0)
    )
    graphdef, params = nnx.split(model, nnx.Param)
    jaxpr = jax.make_jaxpr(lambda p: nnx.merge(graphdef, p)(jnp.asarray(TOKENS)))(params)
    return str(jaxpr).count("dot_general[")

  assert matmuls(2, scan=True) == matmuls(6, scan=True)
  per_layer = matmuls(3, scan=False) - matmuls(2, scan=False)
  assert per_layer > 0 and matmuls(6, scan=False) - matmuls(2, scan=False) == 4 * per_layer
  assert models.param_counts(model_cfg("paper", scan_layers=True), VOCAB) == models.param_counts(
    model_cfg("paper"), VOCAB
  )


def test_stacked_parameters_keep_the_layer_axis_whole_under_fsdp():
  config = tiny.get_config()
  config.model.scan_layers = True
  config.mesh.data, config.mesh.model, config.mesh.fsdp = 4, 2, True
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  state_layout = train_state.state_layout(config, 32, optim.make(config.optimizer), mesh, rules)
  layers = state_layout.shardings["params"]["layers"]
  assert layers["mlp"]["wi"].spec == P(None, "data", "model")
  assert layers["attn"]["q"].spec == P(None, "data", "model", None)
  assert layers["attn_norm"]["scale"].spec == P(None, "data")
