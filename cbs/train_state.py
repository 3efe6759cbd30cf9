"""What a train state holds, and how it comes into being directly sharded.

The state is a plain dict pytree: `params` (an `nnx.State` of float32 parameters), `opt` (the optax
state) and `ewa` (the weight averages). Its shapes are found abstractly first (`jax.eval_shape`), the
logical-axis metadata of every parameter - inherited by the optimizer moments and averages - gives
its shardings, and one jitted function with those output shardings creates it, so no device ever holds
a full replica of a model that needs sharding. Host-side counters (step, tokens, data position) live
in the checkpoint's progress record, not here.
"""

import dataclasses
from typing import Any

import jax
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from cbs import models
from cbs.optim import ewa
from cbs.parallel import sharding

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """Everything static about a run's state: the model's graph, the optimizer and where arrays live."""

  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  shardings: State  # NamedSharding per leaf, same tree as the state
  abstract: State  # ShapeDtypeStruct per leaf, with its sharding (restores and AOT compiles use it)


def _init_fn(config: ml_collections.ConfigDict, vocab_size: int, tx: optax.GradientTransformation):
  def init() -> tuple[nnx.GraphDef, State]:
    model = models.build_model(config.model, vocab_size, nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model)
    return graphdef, {"params": params, "opt": tx.init(params), "ewa": ewa.init(params, config.ewa)}

  return init


def state_layout(
  config: ml_collections.ConfigDict,
  vocab_size: int,
  tx: optax.GradientTransformation,
  mesh: Mesh,
  rules: sharding.Rules,
) -> StateLayout:
  """Shapes and shardings of the state, without allocating it."""
  init = _init_fn(config, vocab_size, tx)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract = nnx.eval_shape(init)
    shardings = nnx.get_named_sharding(abstract, mesh)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  return StateLayout(graphdef, tx, shardings, abstract)


def create(
  config: ml_collections.ConfigDict,
  vocab_size: int,
  layout: StateLayout,
  mesh: Mesh,
  rules: sharding.Rules,
) -> State:
  """A freshly initialised state, each array created on its own devices."""
  init = _init_fn(config, vocab_size, layout.tx)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    return jax.jit(lambda: init()[1], out_shardings=layout.shardings)()
