"""The pure, jit-compiled functions of training: loss, train step and eval step.

Each is a module-level function of (state or params, batch, host-computed scalars) so tests can call
it without jit and the loop can compile it with explicit shardings. Learning rate and EWA decays are
arguments, computed on the host from the token count, because token counts outgrow int32 and the
batch size may change between steps. The train step scans over `groups` microbatches (gradient
accumulation) and, for the batch-size tests, returns the two noise sums of those groups in float32,
before clipping. Nothing here reads the clock, the config or the host.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cbs import ewa
from cbs import optim

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
STATISTICS = ("none", "norm", "full")


def loss_sums(params: nnx.State, graphdef: nnx.GraphDef, batch: Batch) -> tuple[jax.Array, jax.Array]:
  """Summed token cross-entropy (nats) and summed weights, in float32."""
  model = nnx.merge(graphdef, params)
  logits_BxLxV = model(batch["inputs"]).astype(jnp.float32)
  loss_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch["targets"])
  return (loss_BxL * batch["weights"]).sum(), batch["weights"].sum()


def split_groups(x_BxS: jax.Array, groups: int, data_parallel: int) -> jax.Array:
  """[B, ...] -> [groups, B / groups, ...], each group taking its rows from every device's share.

  The batch is sharded by rows over `data_parallel` devices; grouping within each device's block
  keeps every microbatch evenly sharded, so the split moves no data between devices.
  """
  rows = x_BxS.shape[0]
  per_device_group = rows // (data_parallel * groups)
  x = x_BxS.reshape(data_parallel, groups, per_device_group, *x_BxS.shape[1:])
  return jnp.swapaxes(x, 0, 1).reshape(groups, rows // groups, *x_BxS.shape[1:])


def _tree_dot(a, b) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def gradients(params: nnx.State, graphdef: nnx.GraphDef, batch: Batch, groups: int,
              data_parallel: int, statistics: str) -> tuple[nnx.State, Metrics]:
  """Mean token gradient of the batch, accumulated over `groups` microbatches, and noise sums."""
  grad_fn = jax.value_and_grad(lambda p, mb: loss_sums(p, graphdef, mb), has_aux=True)
  grouped = jax.tree.map(lambda x: split_groups(x, groups, data_parallel), batch)

  def accumulate(carry, microbatch):
    grad_sum, loss_sum, weight_sum, sq_norm_sum = carry
    (loss, weight), grad = grad_fn(params, microbatch)
    group_mean = jax.tree.map(lambda g: g / jnp.maximum(weight, 1.0), grad)
    carry = (jax.tree.map(jnp.add, grad_sum, grad), loss_sum + loss, weight_sum + weight,
             sq_norm_sum + _tree_dot(group_mean, group_mean))
    return carry, group_mean if statistics == "full" else None

  zeros = jax.tree.map(jnp.zeros_like, params)
  init = (zeros, jnp.float32(0), jnp.float32(0), jnp.float32(0))
  (grad_sum, loss_sum, weight_sum, sq_norm_sum), group_means = jax.lax.scan(
      accumulate, init, grouped)
  weight_sum = jnp.maximum(weight_sum, 1.0)
  grads = jax.tree.map(lambda g: g / weight_sum, grad_sum)
  grad_sq_norm = _tree_dot(grads, grads)
  metrics = {"loss": loss_sum / weight_sum, "grad_norm": jnp.sqrt(grad_sq_norm)}
  if statistics != "none":
    metrics.update(grad_sq_norm=grad_sq_norm, group_sq_norm_mean=sq_norm_sum / groups)
  if statistics == "full":
    dots_M = jax.vmap(lambda g: _tree_dot(g, grads))(group_means)
    sq_norms_M = jax.vmap(lambda g: _tree_dot(g, g))(group_means)
    metrics.update(group_dots=dots_M, group_orth_sq_norms=sq_norms_M - dots_M ** 2 / grad_sq_norm)
  return grads, metrics


def train_step(state: dict, batch: Batch, lr: jax.Array, weight_decay: jax.Array,
               ewa_taus: dict[str, jax.Array], *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation, groups: int = 1,
               data_parallel: int = 1, statistics: str = "none",
               skip_nonfinite: bool = False) -> tuple[dict, Metrics]:
  """One optimizer update on the batch's mean token loss, then the weight averages.

  With `skip_nonfinite`, a step whose loss or gradient norm is NaN/Inf leaves the state unchanged;
  `nonfinite` (0/1) reports it either way.
  """
  grads, metrics = gradients(state["params"], graphdef, batch, groups, data_parallel, statistics)
  params, opt = optim.apply_updates(tx, grads, state["opt"], state["params"], lr,
                                    weight_decay)
  new_state = {"params": params, "opt": opt, "ewa": ewa.update(state["ewa"], params, ewa_taus)}
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return new_state, {**metrics, "param_norm": optax.tree.norm(new_state["params"]),
                     "nonfinite": 1.0 - finite.astype(jnp.float32)}


def eval_step(params: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef) -> Metrics:
  """Loss sums of one held-out batch; the caller adds them up over the set."""
  total, weight = loss_sums(params, graphdef, batch)
  return {"loss_sum": total, "weight_sum": weight}
