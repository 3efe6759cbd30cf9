"""Where a compiled step's collectives travel and how long they take: mesh axes, ICI, DCN.

Places the partitions of a `collectives.Program` on the mesh (partition p is the p-th device of
the mesh's first slice, in the mesh's order: JAX hands the compiler the mesh's devices in that
order), names the mesh axes each group spans, and times the bytes on the links they cross. A group
inside a slice uses the ICI ports of the physical torus dimensions its chips span (two per
dimension of more than two chips, one for a pair), each at the port's one-way bandwidth; traffic
between slices goes at the host's DCN bandwidth shared by the chips of a host. Collectives are
timed one after another and as if every port they span stayed busy: no latency, no contention,
no overlap with each other. Knows nothing of the model or the config.
"""

import collections
import dataclasses

import numpy as np

from cbs.tpu import collectives


@dataclasses.dataclass(frozen=True)
class Links:
  """Bandwidths of one chip's links, bytes/s."""

  ici_port: float  # one ICI port, one direction
  ici_ports: int
  dcn_per_chip: float  # the host's DCN bandwidth over its chips


def _axes_spanned(points: list[tuple[int, ...]], names: tuple[str, ...]) -> str:
  varying = [name for k, name in enumerate(names) if len({p[k] for p in points}) > 1]
  return ",".join(varying) or "none"


def _ici_ports(coords: list[tuple[int, ...]], ports: int) -> int:
  """Ports a group can keep busy: both neighbours along each torus dimension it spans."""
  extents = [len({c[k] for c in coords}) for k in range(len(coords[0]))] if coords else []
  return min(ports, sum(2 if e > 2 else 1 if e == 2 else 0 for e in extents))


def traffic(program: collectives.Program, mesh, links: Links) -> dict:
  """Per-chip bytes of the step by link, kind and mesh axis, and their time at `links`."""
  devices = list(mesh.devices.flat)
  first_slice = [d for d in devices if getattr(d, "slice_index", 0) in (0, None)]
  position = {d.id: index for index, d in np.ndenumerate(mesh.devices)}
  place = lambda p: position[first_slice[p].id]
  coords = lambda p: tuple(getattr(first_slice[p], "coords", None) or place(p))
  slice_of = np.vectorize(lambda d: getattr(d, "slice_index", 0) or 0)(mesh.devices)
  across = (
    ",".join(name for k, name in enumerate(mesh.axis_names) if np.any(np.diff(slice_of, axis=k)))
    or "none"
  )
  by_link = {
    collectives.ICI: collections.defaultdict(lambda: collections.defaultdict(float)),
    collectives.DCN: collections.defaultdict(lambda: collections.defaultdict(float)),
  }
  seconds = {collectives.ICI: 0.0, collectives.DCN: 0.0}
  for c in program.collectives:
    sent = c.bytes * c.executions
    if c.link == collectives.DCN:
      axis, bandwidth = across, links.dcn_per_chip
    elif c.pairs:
      axis = _axes_spanned([place(p) for pair in c.pairs for p in pair], mesh.axis_names)
      bandwidth = links.ici_port
    else:
      axis = _axes_spanned([place(p) for p in c.group], mesh.axis_names)
      bandwidth = links.ici_port * _ici_ports([coords(p) for p in c.group], links.ici_ports)
    by_link[c.link][c.kind][axis] += sent
    seconds[c.link] += sent / bandwidth if sent else 0.0
  ici = sum(sum(axes.values()) for axes in by_link[collectives.ICI].values())
  dcn = sum(sum(axes.values()) for axes in by_link[collectives.DCN].values())
  return {
    "bytes_per_chip": ici + dcn,
    "ici_bytes": ici,
    "dcn_bytes": dcn,
    "by_link": {
      link: {kind: dict(axes) for kind, axes in kinds.items()}
      for link, kinds in by_link.items()
      if kinds
    },
    "ici_seconds": seconds[collectives.ICI],
    "dcn_seconds": seconds[collectives.DCN],
    "seconds": seconds[collectives.ICI] + seconds[collectives.DCN],
    "loop_trip_counts": list(program.loops),
    "unknown_trip_counts": program.unknown_trip_counts,
  }
