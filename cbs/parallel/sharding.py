"""Device mesh, logical-axis rules and the placement of batches on devices.

Parameters name their dimensions with logical axes (`embed`, `mlp`, `heads`, ...); the rules here map
those names to the mesh axes `data` and `model`, so changing the parallelism is a config change. FSDP
is the rule `embed -> data`: parameters and optimizer state are then split over the data-parallel
devices as well. This module decides where arrays live; it does not create them.
"""

import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from flax.core import spmd
from jax.experimental import mesh_utils
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from cbs.parallel import axis_names

AXES = ("data", "model")
Rules = tuple[tuple[str, str | None], ...]


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """Resolves the -1 entries of (mesh.data, mesh.model) against the devices there are."""
  data, model = int(mesh_cfg.data), int(mesh_cfg.model)
  for name, size in (("mesh.data", data), ("mesh.model", model)):
    if size == 0 or size < -1:
      raise ValueError(f"{name}={size} must be a positive device count or -1 (all remaining)")
  if data == -1 and model == -1:
    raise ValueError("mesh.data and mesh.model cannot both be -1")
  if data == -1:
    data = num_devices // model
  if model == -1:
    model = num_devices // data
  if data < 1 or model < 1 or data * model > num_devices:
    raise ValueError(
      f"mesh {mesh_cfg.data}x{mesh_cfg.model} (data x model) needs more than the "
      f"{num_devices} available devices"
    )
  return data, model


def make_mesh(
  mesh_cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A (data, model) mesh over the first data*model devices (all of them in a normal run).

  Devices of several TPU slices (multislice) are joined along `data`: only the gradient reduction
  crosses the slower network between slices, the model axis stays inside each slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  data, model = mesh_shape(mesh_cfg, len(devices))
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  if slices == 1:
    return jax.make_mesh(
      (data, model), AXES, axis_types=(AxisType.Auto,) * 2, devices=devices[: data * model]
    )
  if data * model != len(devices) or data % slices:
    raise ValueError(
      f"mesh {data}x{model} (data x model) on {slices} slices of "
      f"{len(devices) // slices} devices: use every device, with mesh.data a "
      f"multiple of {slices}"
    )
  grid = mesh_utils.create_hybrid_device_mesh((data // slices, model), (slices, 1), devices)
  return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * 2)


def logical_rules(mesh_cfg: ml_collections.ConfigDict) -> Rules:
  """The configured rules, with `embed` sent to `data` exactly when FSDP is on."""
  rules = tuple((name, axis) for name, axis in mesh_cfg.rules if name != axis_names.EMBED)
  for name, axis in rules:
    if axis not in (None, *AXES):
      raise ValueError(f"mesh.rules maps {name!r} to {axis!r}; mesh axes are {AXES} or None")
  if axis_names.LAYERS not in dict(rules):  # scanned blocks' stacked axis: never split
    rules += ((axis_names.LAYERS, None),)
  return rules + ((axis_names.EMBED, "data" if mesh_cfg.fsdp else None),)


@contextlib.contextmanager
def tracing(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """The mesh and rules that `constrain` reads while a step is traced (compiled)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield


def traced_under(mesh: Mesh, rules: Rules, jitted: Callable) -> Callable:
  """`jitted`, called (and so traced on its first call) under `tracing(mesh, rules)`."""

  def call(*args):
    with tracing(mesh, rules):
      return jitted(*args)

  return call


def constrain(x: jax.Array, *logical_axes: str | None) -> jax.Array:
  """Pins an activation's sharding to its logical axes (one per dimension; None = not split).

  Parameters alone leave the partitioner free to split a matmul the wrong way: under FSDP the
  weights' `embed` axis is split over `data` like the batch, and without pinned activations XLA
  contracted over that axis instead of gathering the weight, which made every chip hold and
  all-reduce the whole global batch's MLP activations and logits (85m on 16 v5e chips with FSDP,
  4 sequences per chip: 5.63 GiB of temporaries, 0.67 GiB pinned). Pinned, each chip computes its
  own rows with gathered weights. A no-op outside `tracing` (single-device use, numpy
  references) and on mesh axes that are manual (inside `shard_map`).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  rules = dict(spmd.get_logical_axis_rules())
  axes = [rules.get(name) if name else None for name in logical_axes]
  spec = [None if axis in mesh.manual_axes else axis for axis in axes]
  return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sequences split over the axis that `batch` maps to; positions never split."""
  return NamedSharding(mesh, PartitionSpec(dict(rules).get(axis_names.BATCH), None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
  axis = dict(rules).get(axis_names.BATCH)
  return mesh.shape[axis] if axis else 1


def to_global(host_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """One global array per field from this host's rows (every host passes its own share)."""
  return {
    name: jax.make_array_from_process_local_data(
      sharding, rows, (rows.shape[0] * jax.process_count(), *rows.shape[1:])
    )
    for name, rows in host_batch.items()
  }
