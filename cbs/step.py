"""The pure, jit-compiled functions of training: loss, train step and eval step.

Each is a module-level function of (state or params, batch, host-computed scalars) so tests can call
it without jit and the loop can compile it with explicit shardings. Learning rate and EWA decays are
arguments, computed on the host from the token count, because token counts outgrow int32 and the
batch size may change between steps. Nothing here reads the clock, the config or the host.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cbs import ewa
from cbs import optim

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def loss_sums(params: nnx.State, graphdef: nnx.GraphDef, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """Summed token cross-entropy (nats) and summed weights, in float32."""
  model = nnx.merge(graphdef, params)
  logits_BxLxV = model(batch["inputs"]).astype(jnp.float32)
  loss_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch["targets"])
  return (loss_BxL * batch["weights"]).sum(), batch["weights"].sum()


def _mean_loss(params, graphdef, batch):
  total, weight = loss_sums(params, graphdef, batch)
  return total / jnp.maximum(weight, 1.0)


def train_step(state: dict, batch: Batch, lr: jax.Array, ewa_taus: dict[str, jax.Array], *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> tuple[dict, Metrics]:
  """One optimizer update on the batch's mean token loss, then the weight averages."""
  loss, grads = jax.value_and_grad(_mean_loss)(state["params"], graphdef, batch)
  params, opt = optim.apply_updates(tx, grads, state["opt"], state["params"], lr)
  new_state = {"params": params, "opt": opt, "ewa": ewa.update(state["ewa"], params, ewa_taus)}
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
             "param_norm": optax.tree.norm(params)}
  return new_state, metrics


def eval_step(params: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef) -> Metrics:
  """Loss sums of one held-out batch; the caller adds them up over the set."""
  total, weight = loss_sums(params, graphdef, batch)
  return {"loss_sum": total, "weight_sum": weight}
