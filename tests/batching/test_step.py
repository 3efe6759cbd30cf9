"""The statistics variant of the train step: exact group sums, same update as the plain step, memory
that does not grow with the number of groups, and each device's local gradients as groups."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cbs import models
from cbs import step
from cbs import train_state
from cbs.optim import optimizers as optim
from cbs.parallel import sharding
from configs import tiny

ROWS, LEN, VOCAB = 16, 16, 32


def small_config(**mesh):
  config = tiny.get_config()
  config.model.update(num_layers=1, d_model=32, num_heads=2)
  config.mesh.update(mesh)
  return config


def flat(tree) -> np.ndarray:
  return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def batch():
  tokens = np.random.default_rng(2).integers(0, VOCAB, size=(ROWS, LEN + 1))
  return {
    "inputs": tokens[:, :-1],
    "targets": tokens[:, 1:],
    "weights": np.ones((ROWS, LEN), np.float32),
  }


@pytest.fixture(scope="module")
def per_example(batch):
  """[ROWS, P] gradients of each sequence's mean token loss, one sequence at a time."""
  graphdef, params = nnx.split(models.build_model(small_config().model, VOCAB, nnx.Rngs(0)))

  def example_grad(inputs, targets):
    one = {"inputs": inputs[None], "targets": targets[None], "weights": jnp.ones((1, LEN))}
    return jax.grad(lambda p: step.loss_sums(p, graphdef, one)[0] / LEN)(params)

  grads = jax.jit(jax.vmap(example_grad))(batch["inputs"], batch["targets"])
  return np.concatenate(
    [np.asarray(x, np.float64).reshape(ROWS, -1) for x in jax.tree.leaves(grads)], 1
  )


def expected_sums(per_example: np.ndarray, members: list[list[int]]) -> dict:
  """The group sums by their definitions, from the per-example gradients."""
  means = np.stack([per_example[m].mean(0) for m in members])
  g = means.mean(0)
  r = means - g
  return {
    "grad_sq_norm": g @ g,
    "group_sq_norm_mean": (means**2).sum(1).mean(),
    "group_dev_sq_norm_mean": (r**2).sum(1).mean(),
    "group_dot_dev_mean": (r @ g).mean(),
    "group_dot_dev_sq_mean": ((r @ g) ** 2).mean(),
  }


def check_sums(metrics, expected):
  sums = metrics["noise"]._asdict()
  for name, value in expected.items():
    scale = expected["grad_sq_norm"] ** 2 if "dot_dev" in name else expected["grad_sq_norm"]
    expected_value = pytest.approx(float(value), rel=2e-4, abs=1e-5 * float(scale))
    assert float(sums[name]) == expected_value, name


def test_single_device_groups_match_per_example_gradients(batch, per_example):
  groups, data_parallel = 4, 2
  graphdef, params = nnx.split(models.build_model(small_config().model, VOCAB, nnx.Rngs(0)))
  grads, metrics = jax.jit(
    functools.partial(
      step.gradients_with_statistics,
      graphdef=graphdef,
      groups=groups,
      data_parallel=data_parallel,
      statistics="full",
    )
  )(params, batch=batch)
  np.testing.assert_allclose(flat(grads), per_example.mean(0), rtol=1e-4, atol=1e-7)
  # Group j takes rows j*k .. j*k + k - 1 of each of the `data_parallel` blocks (k rows each).
  k, block = ROWS // (groups * data_parallel), ROWS // data_parallel
  members = [
    [d * block + j * k + i for d in range(data_parallel) for i in range(k)] for j in range(groups)
  ]
  check_sums(metrics, expected_sums(per_example, members))


@pytest.fixture(
  scope="module",
  params=[dict(data=4, model=2), dict(data=8, fsdp=True)],
  ids=["data4_model2", "fsdp8"],
)
def sharded_run(request, batch):
  """One statistics step and one plain step from the same state, compiled as the loop does."""
  config = small_config(**request.param)
  mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.mesh)
  tx = optim.make(config.optimizer, 1.0)
  state_layout = train_state.state_layout(config, VOCAB, tx, mesh, rules)
  groups_on = step.local_groups(state_layout.shardings["params"], mesh, "data")
  device_batch = jax.device_put(
    jax.tree.map(jnp.asarray, batch), sharding.batch_sharding(mesh, rules)
  )
  results = {}
  for statistics in ("none", "full"):
    state = train_state.create(config, VOCAB, state_layout, mesh, rules)
    fn = jax.jit(
      functools.partial(
        step.train_step,
        graphdef=state_layout.graphdef,
        tx=tx,
        groups=2,
        data_parallel=mesh.shape["data"],
        statistics=statistics,
        device_groups=groups_on,
      )
    )
    results[statistics] = jax.device_get(fn(state, device_batch, 1e-3, 0.0, {}))
  return request.param, groups_on, results


def test_statistics_step_makes_the_plain_update(sharded_run):
  _, _, results = sharded_run
  (plain_state, plain), (stats_state, stats) = results["none"], results["full"]
  # Same gradient up to summation order; Adam's first step moves each weight by about lr = 1e-3.
  np.testing.assert_allclose(flat(stats_state), flat(plain_state), rtol=1e-4, atol=1e-5)
  for name in ("loss", "grad_norm", "param_norm"):
    assert float(stats[name]) == pytest.approx(float(plain[name]), rel=1e-5)
  assert set(plain) == {"loss", "grad_norm", "param_norm", "nonfinite"}  # no statistics paid for


def test_groups_are_local_gradients_unless_parameters_are_sharded_over_data(
  sharded_run, per_example
):
  mesh_cfg, groups_on, results = sharded_run
  metrics = results["full"][1]
  if mesh_cfg.get("fsdp"):
    # FSDP: the two microbatches, each a row from every device (even rows, odd rows): M = 2.
    assert groups_on is None
    members = [list(range(0, ROWS, 2)), list(range(1, ROWS, 2))]
  else:
    # Device d holds rows 4d .. 4d+3, its microbatch j rows 4d+2j, 4d+2j+1: M = 4 x 2 = 8.
    assert groups_on is not None
    members = [[2 * i, 2 * i + 1] for i in range(8)]
  check_sums(metrics, expected_sums(per_example, members))


def compiled_temp_bytes(groups: int, statistics: str) -> int:
  config = small_config()
  config.model.vocab_size = 4096  # parameters (1 MiB of float32 embeddings) dominate activations
  graphdef, params = nnx.split(models.build_model(config.model, 4096, nnx.Rngs(0)))
  tx = optim.make(config.optimizer, 1.0)
  state = jax.eval_shape(lambda: {"params": params, "opt": tx.init(params), "ewa": {}})
  batch = {
    k: jax.ShapeDtypeStruct((ROWS, LEN), d)
    for k, d in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))
  }
  fn = jax.jit(
    functools.partial(
      step.train_step, graphdef=graphdef, tx=tx, groups=groups, statistics=statistics
    )
  )
  return fn.lower(state, batch, 1e-3, 0.0, {}).compile().memory_analysis().temp_size_in_bytes


def test_inner_product_statistics_memory_does_not_grow_with_the_groups():
  param_bytes = 4 * 4096 * 32 * 2  # the two embedding tables alone
  full = {m: compiled_temp_bytes(m, "full") for m in (2, 16)}
  # Keeping every group's gradient would add 14 parameter copies from M = 2 to M = 16.
  assert full[16] <= full[2] + param_bytes // 4, full
