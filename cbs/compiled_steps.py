"""The train and eval steps compiled ahead of time for one mesh: what every caller compiles from.

`step_setup` builds, once, what a compiled step depends on (placement, optimizer, state layout);
the loop, `cbs.compile_check` and the benchmarks all compile through `step_compiler`, so what they
measure is what the loop runs. Shardings are explicit and the state is donated, so a step updates
it in place.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from cbs import models
from cbs import step as step_lib
from cbs import train_state
from cbs.batching.step_plan import StepKey
from cbs.optim import ewa
from cbs.optim import optimizers as optim
from cbs.parallel import placement as placement_lib
from cbs.parallel import sharding


@dataclasses.dataclass(frozen=True)
class StepSetup:
  """What compiling a step needs, built once: where arrays live, the optimizer, the state."""

  placement: placement_lib.Placement
  tx: optax.GradientTransformation
  state_layout: train_state.StateLayout


def step_setup(config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> StepSetup:
  """The optimizer, state layout and placement of `config` on `mesh`."""
  rules = sharding.logical_rules(config.mesh)
  tx = optim.make(config.optimizer, models.hidden_lr_scale(config.model))
  state_layout = train_state.state_layout(config, vocab_size, tx, mesh, rules)
  placement = placement_lib.make(mesh, rules, state_layout.shardings["params"])
  return StepSetup(placement, tx, state_layout)


def step_arguments(
  config: ml_collections.ConfigDict, state_abstract, size: int, batch_sharding=None
) -> tuple:
  """Shapes (and placements) of a train step's arguments at batch `size`, for lowering it."""
  batch = {
    name: jax.ShapeDtypeStruct((size, config.data.seq_len), dtype, sharding=batch_sharding)
    for name, dtype in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))
  }
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  taus = {name: scalar for name in ewa.names(config.ewa)}
  return state_abstract, batch, scalar, scalar, taus


def bound_step(
  config: ml_collections.ConfigDict,
  setup: StepSetup,
  key: StepKey,
  device_groups: step_lib.DeviceGroups | None = None,
) -> Callable:
  """The pure train step of the layout `key`, its static arguments bound."""
  return functools.partial(
    step_lib.train_step,
    graphdef=setup.state_layout.graphdef,
    tx=setup.tx,
    groups=key.microbatches,
    data_parallel=setup.placement.data_parallel,
    statistics=key.statistics,
    device_groups=device_groups,
    skip_nonfinite=config.train.on_nonfinite == "skip",
  )


def step_compiler(config: ml_collections.ConfigDict, setup: StepSetup) -> Callable:
  """key (batch, groups, statistics) -> the train step compiled ahead of time for that layout.

  Statistics variants take the devices' local gradients as groups where the placement allows it.
  """
  where, layout = setup.placement, setup.state_layout

  def compile_step(key: StepKey):
    key = StepKey(*key)
    step_fn = jax.jit(
      bound_step(config, setup, key, where.device_groups),
      in_shardings=(
        layout.shardings,
        where.batch,
        where.replicated,
        where.replicated,
        where.replicated,
      ),
      out_shardings=(layout.shardings, where.replicated),
      donate_argnums=0,
    )
    arguments = step_arguments(config, layout.abstract, key.size, where.batch)
    with sharding.tracing(where.mesh, where.rules):
      return step_fn.lower(*arguments).compile()

  return compile_step


def eval_step(setup: StepSetup) -> Callable:
  """(params, batch) -> the held-out loss sums of the batch, compiled on first call."""
  where, layout = setup.placement, setup.state_layout
  return sharding.traced_under(
    where.mesh,
    where.rules,
    jax.jit(
      functools.partial(step_lib.eval_step, graphdef=layout.graphdef),
      in_shardings=(layout.shardings["params"], where.batch),
      out_shardings=where.replicated,
    ),
  )
