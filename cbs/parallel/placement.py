"""Where a run's arrays live on its mesh: built once per run, read by every compiled function.

The batch is split by rows over the data-parallel devices, scalars and metrics are replicated, and
where no parameter is sharded over the batch axis each device's local gradient can be one group of
the gradient-noise statistics (`cbs.step.local_groups`). The loop, the compile check and the
benchmarks take all of it from one `Placement`, so none of them derives it again.
"""

import dataclasses

from jax.sharding import Mesh
from jax.sharding import NamedSharding

from cbs import step as step_lib
from cbs.parallel import sharding


@dataclasses.dataclass(frozen=True)
class Placement:
  """A mesh, its logical-axis rules and the shardings a train step is compiled with."""

  mesh: Mesh
  rules: sharding.Rules
  replicated: NamedSharding  # scalars, metrics, host-computed arguments
  batch: NamedSharding  # rows over the data-parallel devices
  data_parallel: int  # devices the batch rows are split over
  device_groups: step_lib.DeviceGroups | None  # local gradients as statistics groups, or None


def make(mesh: Mesh, rules: sharding.Rules, param_shardings) -> Placement:
  """The placement on `mesh` of a state whose parameters are sharded as `param_shardings`."""
  return Placement(
    mesh=mesh,
    rules=rules,
    replicated=sharding.replicated(mesh),
    batch=sharding.batch_sharding(mesh, rules),
    data_parallel=sharding.data_parallel_size(mesh, rules),
    device_groups=step_lib.local_groups(param_shardings, mesh, dict(rules).get("batch")),
  )
