"""TPU slices to compile for on a host without TPU chips: each generation's figures, its devices.

Owns the per-chip table (HBM, peak FLOP/s, HBM bandwidth, ICI ports), the compile-only devices
libtpu builds for a `GENERATION:SHAPE` topology, and one chip's links (ICI ports, its share of its
host's data-center network). Knows nothing of models or configs; errors a user can fix are one
line (`UsageError`).
"""

import dataclasses
import importlib.util
import re

from cbs.metrics import chip_peaks
from cbs.tpu import interconnect

# 2 x 100 Gbps NICs per host (Cloud TPU v5e docs, https://cloud.google.com/tpu/docs/v5e); v5p
# gives 50 Gbps per chip, 4 chips per host: the same (https://cloud.google.com/tpu/docs/v5p).
DCN_HOST_BANDWIDTH = 25e9


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip figures of a TPU generation (one JAX device per chip)."""

  hbm_bytes: int
  peak_flops: float  # dense bf16 FLOP/s (`chip_peaks`)
  hbm_bandwidth: float  # bytes/s
  chip_config: str  # libtpu's device layout: megacore = both TensorCores of a chip as one device
  ici_ports: int  # links to neighbours: 4 on a 2D torus, 6 on a 3D torus
  ici_port_bandwidth: float  # bytes/s, one port, one direction


# Cloud TPU system architecture pages (https://cloud.google.com/tpu/docs/v4, .../v5e, .../v5p,
# .../v6e): HBM, ports and bidirectional ICI bandwidth per chip (v5e 400 GB/s over 4
# ports, v5p 1200 GB/s over 6, v6e 800 GB/s over 4), halved for one direction and split over the
# ports. v4's page gives no ICI figure: 6 links of 50 GB/s per direction from the TPU v4 paper
# (Jouppi et al., "TPU v4: An Optically Reconfigurable Supercomputer ...", ISCA 2023).
_PEAK = chip_peaks.TPU_GENERATIONS
CHIPS = {
  "v4": Chip(32 * 2**30, _PEAK["v4"], 1.2e12, "megacore", 6, 50e9),
  "v5e": Chip(16 * 2**30, _PEAK["v5e"], 0.819e12, "default", 4, 400e9 / 2 / 4),
  "v5p": Chip(95 * 2**30, _PEAK["v5p"], 2.765e12, "megacore", 6, 1200e9 / 2 / 6),
  "v6e": Chip(32 * 2**30, _PEAK["v6e"], 1.64e12, "default", 4, 800e9 / 2 / 4),
}
EXAMPLES = ("v4:2x2x2", "v5e:4x4", "v5p:2x2x4", "v6e:4x4")
_NAME = re.compile(r"^(v4|v5e|v5p|v6e):\d+(x\d+){1,2}$")


class UsageError(ValueError):
  """Input this tool cannot use; the message says what is allowed."""


def topology_devices(name: str, slices: int) -> tuple[Chip, list]:
  """The chip and compile-only devices of `slices` slices of topology `name`."""
  if not _NAME.match(name):
    raise UsageError(
      f"--topology={name!r} is not known; use GENERATION:SHAPE with GENERATION in "
      f"{', '.join(CHIPS)} (e.g. {', '.join(EXAMPLES)})"
    )
  if slices < 1:
    raise UsageError(f"--slices={slices} must be at least 1")
  if importlib.util.find_spec("libtpu") is None:
    raise UsageError("compiling for TPU needs libtpu: pip install -e '.[tpu]'")
  import jax  # noqa: PLC0415
  from jax.experimental import topologies  # noqa: PLC0415

  chip = CHIPS[name.split(":")[0]]
  try:
    topology = topologies.get_topology_desc(
      topology_name=name, platform="tpu", chip_config_name=chip.chip_config, num_slices=slices
    )
  except jax.errors.JaxRuntimeError as e:  # a shape libtpu does not build, e.g. v5e:3x3
    raise UsageError(f"--topology={name!r}: {str(e).splitlines()[0]}") from None
  return chip, list(topology.devices)


def links_of(chip: Chip, devices: list, dcn_bandwidth: float) -> interconnect.Links:
  """The chip's ICI ports and its share of its host's DCN bandwidth."""
  hosts = len({d.process_index for d in devices})
  return interconnect.Links(
    chip.ici_port_bandwidth, chip.ici_ports, dcn_bandwidth * hosts / len(devices)
  )
