"""The pure, jit-compiled functions of training: loss, train step and eval step.

Each is a module-level function of (state or params, batch, host-computed scalars) so tests can call
it without jit and the loop can compile it with explicit shardings. Learning rate and EWA decays are
arguments, computed on the host from the token count, because token counts outgrow int32 and the
batch size may change between steps. The train step scans over microbatches (gradient
accumulation). Its statistics variant, compiled separately and run only on the steps that test the
batch size, also returns the gradient-noise sums of M groups (see `cbs.batching.statistics`) in
float32, before clipping, in O(parameters) memory whatever M is. Nothing here reads the clock, the
config or the host.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec

from cbs.batching.noise_sums import NoiseSums
from cbs.optim import ewa
from cbs.optim import optimizers as optim

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array | NoiseSums]  # the scalars, and "noise" on statistics steps
DeviceGroups = tuple[Mesh, str]  # (mesh, data axis): each device's local gradients are groups


def loss_sums(
  params: nnx.State, graphdef: nnx.GraphDef, batch: Batch
) -> tuple[jax.Array, jax.Array]:
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


def _accumulate(
  params: nnx.State, graphdef: nnx.GraphDef, grouped: Batch, sq_norms: bool, zero: jax.Array
):
  """Sums over the microbatches of gradient, loss and weight, and of |G_j|^2 if `sq_norms`.

  G_j is microbatch j's mean token gradient. Only running sums are carried: O(parameters).
  `zero` starts the scalar sums (device-varying inside `shard_map`).
  """
  grad_fn = jax.value_and_grad(lambda p, mb: loss_sums(p, graphdef, mb), has_aux=True)

  def add(carry, microbatch):
    grad_sum, loss_sum, weight_sum, sq_norm_sum = carry
    (loss, weight), grad = grad_fn(params, microbatch)
    if sq_norms:
      sq_norm_sum += _tree_dot(grad, grad) / jnp.maximum(weight, 1.0) ** 2
    return (
      jax.tree.map(jnp.add, grad_sum, grad),
      loss_sum + loss,
      weight_sum + weight,
      sq_norm_sum,
    ), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  return jax.lax.scan(add, (zeros, zero, zero, zero), grouped)[0]


def _deviations(
  params: nnx.State, graphdef: nnx.GraphDef, grouped: Batch, grads: nnx.State, zero: jax.Array
):
  """Second pass: with r_j = G_j - g, the sums of |r_j|^2, r_j . g and (r_j . g)^2.

  The inner-product and orthogonality tests need G_j . g for the step's own mean g, which exists
  only after every group is seen; recomputing each G_j once g is known keeps one group gradient at
  a time (O(parameters), not O(M x parameters)) and gives the exact statistics, for one more
  forward and backward pass on the steps that test. Deviations from g keep float32 sums
  well-conditioned when the noise is small against the signal.
  """
  grad_fn = jax.grad(lambda p, mb: loss_sums(p, graphdef, mb), has_aux=True)

  def add(carry, microbatch):
    grad, weight = grad_fn(params, microbatch)
    deviation = jax.tree.map(lambda x, g: x / jnp.maximum(weight, 1.0) - g, grad, grads)
    dot = _tree_dot(deviation, grads)
    sums = (_tree_dot(deviation, deviation), dot, dot**2)
    return tuple(c + v for c, v in zip(carry, sums)), None

  return jax.lax.scan(add, (zero,) * 3, grouped)[0]


def gradients(
  params: nnx.State, graphdef: nnx.GraphDef, batch: Batch, groups: int, data_parallel: int
) -> tuple[nnx.State, Metrics]:
  """Mean token gradient of the batch, accumulated over `groups` microbatches: the plain step."""
  grouped = jax.tree.map(lambda x: split_groups(x, groups, data_parallel), batch)
  grad_sum, loss_sum, weight_sum, _ = _accumulate(params, graphdef, grouped, False, jnp.float32(0))
  weight_sum = jnp.maximum(weight_sum, 1.0)
  grads = jax.tree.map(lambda g: g / weight_sum, grad_sum)
  return grads, {"loss": loss_sum / weight_sum, "grad_norm": optax.tree.norm(grads)}


def _group_sums(
  params: nnx.State,
  batch: Batch,
  *,
  graphdef: nnx.GraphDef,
  groups: int,
  data_parallel: int,
  statistics: str,
  axis: str | None,
  devices: int,
):
  """Gradient and noise sums over `groups` microbatches x `devices` local gradients along `axis`.

  Inside `shard_map`, `batch` is one device's rows and every sum is reduced over `axis` once, at
  the end; outside, `axis` is None and `devices` 1.
  """
  reduce = (lambda x: jax.lax.psum(x, axis)) if axis else (lambda x: x)
  # Varying over `axis`: each device differentiates its own copy, so the gradient is that of its
  # rows, not already their psum.
  vary = (lambda x: jax.lax.pcast(x, axis, to="varying")) if axis else (lambda x: x)
  params, zero = vary(params), vary(jnp.float32(0))
  grouped = jax.tree.map(lambda x: split_groups(x, groups, data_parallel), batch)
  grad_sum, loss_sum, weight_sum, sq_norm_sum = reduce(
    _accumulate(params, graphdef, grouped, True, zero)
  )
  weight_sum = jnp.maximum(weight_sum, 1.0)
  grads = jax.tree.map(lambda g: g / weight_sum, grad_sum)
  grad_sq_norm = _tree_dot(grads, grads)
  total_groups = groups * devices
  sums = NoiseSums(grad_sq_norm, sq_norm_sum / total_groups)
  if statistics == "full":
    dev_sq, dot, dot_sq = reduce(_deviations(params, graphdef, grouped, grads, zero))
    sums = sums._replace(
      group_dev_sq_norm_mean=dev_sq / total_groups,
      group_dot_dev_mean=dot / total_groups,
      group_dot_dev_sq_mean=dot_sq / total_groups,
    )
  return grads, {"loss": loss_sum / weight_sum, "grad_norm": jnp.sqrt(grad_sq_norm), "noise": sums}


def gradients_with_statistics(
  params: nnx.State,
  graphdef: nnx.GraphDef,
  batch: Batch,
  groups: int,
  data_parallel: int,
  statistics: str,
  device_groups: DeviceGroups | None = None,
) -> tuple[nnx.State, Metrics]:
  """The plain step's gradient and the noise sums of M groups (`NoiseSums`, under "noise").

  Without `device_groups` the groups are the `groups` microbatches (M = groups). With it, each
  device's local gradient of each microbatch is a group, summed before the cross-device reduction
  inside `shard_map` (DDP-Norm of Lau et al.): M = groups x data-parallel at no extra compute. That
  needs the parameters replicated over the data axis (not FSDP).
  """
  if device_groups is None:
    return _group_sums(
      params,
      batch,
      graphdef=graphdef,
      groups=groups,
      data_parallel=data_parallel,
      statistics=statistics,
      axis=None,
      devices=1,
    )
  mesh, axis = device_groups

  def body(params, batch):
    return _group_sums(
      params,
      batch,
      graphdef=graphdef,
      groups=groups,
      data_parallel=1,
      statistics=statistics,
      axis=axis,
      devices=data_parallel,
    )

  mapped = jax.shard_map(
    body,
    mesh=mesh,
    in_specs=(PartitionSpec(), PartitionSpec(axis)),
    out_specs=(PartitionSpec(), PartitionSpec()),
    axis_names={axis},
  )
  return mapped(params, batch)


def local_groups(param_shardings, mesh: Mesh, axis: str | None) -> DeviceGroups | None:
  """(mesh, axis) when devices' local gradients can be statistics groups, else None.

  They can when the batch is split over more than one device along `axis` and no parameter is
  sharded over it; with FSDP the local gradient is never whole on one device, so the groups are
  the microbatches alone.
  """
  if axis is None or mesh.shape[axis] < 2:
    return None
  for s in jax.tree.leaves(param_shardings, is_leaf=lambda x: hasattr(x, "spec")):
    if any(axis == part or (isinstance(part, tuple) and axis in part) for part in s.spec):
      return None
  return mesh, axis


def train_step(
  state: dict,
  batch: Batch,
  lr: jax.Array,
  weight_decay: jax.Array,
  ewa_taus: dict[str, jax.Array],
  *,
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  groups: int = 1,
  data_parallel: int = 1,
  statistics: str = "none",
  device_groups: DeviceGroups | None = None,
  skip_nonfinite: bool = False,
) -> tuple[dict, Metrics]:
  """One optimizer update on the batch's mean token loss, then the weight averages.

  `statistics` other than "none" compiles the statistics variant (same update, plus the noise
  sums under "noise"). With `skip_nonfinite`, a step whose loss or gradient norm is NaN/Inf leaves
  the state unchanged; `nonfinite` (0/1) reports it either way.
  """
  if statistics == "none":
    grads, metrics = gradients(state["params"], graphdef, batch, groups, data_parallel)
  else:
    grads, metrics = gradients_with_statistics(
      state["params"], graphdef, batch, groups, data_parallel, statistics, device_groups
    )
  params, opt = optim.apply_updates(tx, grads, state["opt"], state["params"], lr, weight_decay)
  new_state = {"params": params, "opt": opt, "ewa": ewa.update(state["ewa"], params, ewa_taus)}
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return new_state, {
    **metrics,
    "param_norm": optax.tree.norm(new_state["params"]),
    "nonfinite": 1.0 - finite.astype(jnp.float32),
  }


def eval_step(params: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef) -> Metrics:
  """Loss sums of one held-out batch; the caller adds them up over the set."""
  total, weight = loss_sums(params, graphdef, batch)
  return {"loss_sum": total, "weight_sum": weight}
