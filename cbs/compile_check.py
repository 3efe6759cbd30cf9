"""Does a config fit a TPU slice? `python -m cbs.compile_check --config=CONFIG --topology=v5e:4x4`.

Compiles the loop's own train step (`compiled_steps.step_compiler`: same mesh, shardings,
FSDP / model axis, scanned layers, remat) for a TPU topology on this host, with no TPU and no
data: libtpu (the `tpu` extra) compiles for compile-only devices, shapes stand in for arrays. Each layout the batch
controller can reach (every size up to `batch.max_size`) is compiled; the JSON printed gives per-chip
bytes against the chip's HBM, the compiled program's FLOPs, bytes accessed and collectives per step
(`cbs.tpu.collectives`, timed on the slice's links by `cbs.tpu.interconnect`), and a range for the step
time: at least the longest of compute, HBM traffic and communication (all overlapped), at most
compute (or HBM) plus communication (none overlapped), with the MFU bounds they give.
`batch.microbatch=auto` is resolved as at run time, from the compiled sizes. Bad input is one line
on stderr with exit code 2.
"""

import dataclasses
import functools
import gc
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from cbs.metrics import chip_peaks
from cbs.tpu import collectives
from cbs.tpu import interconnect

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, GENERATION:SHAPE, e.g. v5e:4x4.")
_SLICES = flags.DEFINE_integer(
  "slices", 1, "Slices joined over the data-center network (multislice)."
)
# 2 x 100 Gbps NICs per host (Cloud TPU v5e docs, https://cloud.google.com/tpu/docs/v5e); v5p
# gives 50 Gbps per chip, 4 chips per host: the same (https://cloud.google.com/tpu/docs/v5p).
DCN_HOST_BANDWIDTH = 25e9
_DCN = flags.DEFINE_float(
  "dcn_bandwidth",
  DCN_HOST_BANDWIDTH,
  "Data-center network bytes/s per host, shared by its chips (multislice).",
)
flags.mark_flags_as_required(["config", "topology"])


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


@dataclasses.dataclass(frozen=True)
class Figures:
  """What the check reads of a compiled step, kept instead of the executable.

  A compiled TPU program of a 1B model holds gigabytes of host memory; a growing recipe compiles a
  dozen layouts, and keeping them all ran this 24 GiB host out of memory (TinyLlama on v5p:2x2x4).
  """

  memory: object  # `memory_analysis()` of the executable
  cost: dict
  collectives: object = None  # `collectives.Program` of its optimized HLO, where asked for

  def memory_analysis(self):
    return self.memory

  def cost_analysis(self) -> dict:
    return self.cost


def figures_of(compile_step, read_collectives=None):
  """`compile_step` returning each key's `Figures`, compiled once per key (`auto` and the report
  share the layout it settles on); `read_collectives(compiled)` fills in `Figures.collectives`.

  The executable is dropped as soon as it is read, and JAX's tracing and lowering caches with it:
  MicroLlama (2 layers) on v5p:2x2x4, 11 compiles, ends at 2.7 GiB of host memory, not 4.0.
  """
  import jax  # noqa: PLC0415

  @functools.cache
  def compile_figures(key):
    compiled = compile_step(key)
    figures = Figures(
      compiled.memory_analysis(),
      dict(compiled.cost_analysis()),
      read_collectives(compiled) if read_collectives else None,
    )
    del compiled
    jax.clear_caches()
    gc.collect()
    return figures

  return compile_figures


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


def vocab_rows(config) -> int:
  """Embedding rows, without reading any vocabulary file (the check needs no data)."""
  if config.model.vocab_size > 0:
    return config.model.vocab_size
  if config.data.source == "synthetic":
    return config.data.synthetic.vocab_size
  from cbs.data import vocab  # noqa: PLC0415  (imports seqio: only for text configs)

  known = {vocab.BYTE: 384, vocab.T5_VOCAB: 32_128}  # `vocab.padded_size` of each
  if config.data.vocab not in known:
    raise UsageError(
      f"data.vocab={config.data.vocab!r}: its size is not known without reading it; "
      "add --config.model.vocab_size=ROWS (the padded vocabulary size)"
    )
  return known[config.data.vocab]


def loop_scale(config, vocab: int, groups: int) -> float:
  """Step FLOPs over those of one pass through each loop body, by `cbs.metrics.flops`.

  XLA's cost analysis counts a loop body once; the step loops over `groups` microbatches and, with
  scanned layers, over the blocks (forward and backward loops).
  """
  from cbs.metrics import flops as flops_lib  # noqa: PLC0415

  once = config.model.copy_and_resolve_references()
  once.num_layers = 1 if config.model.scan_layers else config.model.num_layers
  seq_len = config.data.seq_len
  return groups * (
    flops_lib.train_flops_per_token(config.model, vocab, seq_len)
    / flops_lib.train_flops_per_token(once, vocab, seq_len)
  )


def estimate(
  flops: float, bytes_accessed: float, comm_seconds: float, model_flops: float, chip: Chip
) -> dict:
  """The step time's range per chip and the MFU bounds it gives.

  Lower bound: the longest of compute (FLOPs at peak), HBM traffic and communication, as if they
  overlapped perfectly. Upper: compute (or HBM traffic, if longer) plus communication, none of it
  overlapped. The HBM bytes are XLA's count with each loop body once (scaling them like the FLOPs
  would also multiply the once-per-step optimizer traffic), so that side is low too.
  """
  compute, memory = flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth
  parts = {"compute": compute, "hbm": memory, "communication": comm_seconds}
  lower, upper = max(parts.values()), max(compute, memory) + comm_seconds
  return {
    "compute_seconds": compute,
    "hbm_seconds": memory,
    "communication_seconds": comm_seconds,
    "step_seconds_lower_bound": lower,
    "step_seconds_upper_bound": upper,
    "mfu_upper_bound": model_flops / (lower * chip.peak_flops),
    "mfu_lower_bound": model_flops / (upper * chip.peak_flops),
    "communication_share": comm_seconds / upper,
    "bound": max(parts, key=parts.get),
    "how": "per chip: compute = FLOPs / peak bf16 FLOP/s, hbm = bytes accessed (loop bodies "
    "once) / HBM bandwidth, communication = collective bytes / link bandwidth; "
    "lower bound = max of the three (all overlapped), upper bound = max(compute, "
    "hbm) + communication (no overlap); mfu bounds = model FLOPs / (bound x peak); "
    "leaves out latency, contention, kernel efficiency and host work",
  }


def host_count(config, setup, key) -> float:
  """XLA's FLOPs of the step's unpartitioned program, lowered on this host (no compile).

  The TPU program cannot be counted directly: under FSDP (and a model axis) its compiler overlaps
  each weight gather or gradient scatter with its matmul in a loop of partial matmuls (a windowed
  einsum) whose body the cost analysis counts once (85m on v5e:4x4: 0.73x the model's FLOPs). The
  unpartitioned step does the same arithmetic, with only the microbatch and scanned-layer loops.
  """
  import jax  # noqa: PLC0415

  from cbs import compiled_steps  # noqa: PLC0415

  unplaced = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), setup.state_layout.abstract
  )
  step_fn = jax.jit(compiled_steps.bound_step(config, setup, key))
  arguments = compiled_steps.step_arguments(config, unplaced, key[0])
  return step_fn.lower(*arguments).cost_analysis()["flops"]


def _cost(
  compiled,
  host_flops: float,
  chips: int,
  scale: float,
  model_flops: float,
  chip: Chip,
  communication: dict,
) -> dict:
  """XLA's counts (loop bodies once), the step's FLOPs per chip, its collectives, the estimate."""
  tpu = compiled.cost_analysis()
  flops = host_flops * scale / chips
  return {
    "xla_flops": host_flops / chips,
    "tpu_xla_flops": tpu["flops"],
    "loop_scale": scale,
    "flops": flops,
    "bytes_accessed": tpu["bytes accessed"],
    "model_flops": model_flops,
    "communication": communication,
    "estimate": estimate(flops, tpu["bytes accessed"], communication["seconds"], model_flops, chip),
  }


def links_of(chip: Chip, devices: list, dcn_bandwidth: float) -> interconnect.Links:
  """The chip's ICI ports and its share of its host's DCN bandwidth."""
  hosts = len({d.process_index for d in devices})
  return interconnect.Links(
    chip.ici_port_bandwidth, chip.ici_ports, dcn_bandwidth * hosts / len(devices)
  )


def check(
  config, topology: str, slices: int = 1, dcn_bandwidth: float = DCN_HOST_BANDWIDTH
) -> dict:
  """Compiles every reachable layout of `config` for the topology; the report as a dict."""
  start = time.perf_counter()
  if not dcn_bandwidth > 0:
    raise UsageError(f"--dcn_bandwidth={dcn_bandwidth} must be positive (bytes/s per host)")
  chip, devices = topology_devices(topology, slices)  # a bad name fails before the heavy imports
  from cbs import compiled_steps  # noqa: PLC0415
  from cbs import models  # noqa: PLC0415
  from cbs.batching import controller as controller_lib  # noqa: PLC0415
  from cbs.batching import layout as layout_lib  # noqa: PLC0415
  from cbs.batching import memory_fit as fit  # noqa: PLC0415
  from cbs.config import validation  # noqa: PLC0415
  from cbs.metrics import flops as flops_lib  # noqa: PLC0415
  from cbs.parallel import sharding  # noqa: PLC0415

  validation.validate(config, len(devices), read_data=False)  # compiling reads no data
  vocab = vocab_rows(config)
  try:
    mesh = sharding.make_mesh(config.mesh, devices)
  except ValueError as e:  # e.g. a mesh that does not split evenly over the slices
    raise UsageError(str(e)) from None
  setup = compiled_steps.step_setup(config, vocab, mesh)
  data_parallel = setup.placement.data_parallel
  compile_step = figures_of(
    compiled_steps.step_compiler(config, setup),
    lambda compiled: collectives.count(compiled.as_text(), slices),
  )
  links = links_of(chip, devices, dcn_bandwidth)
  budget = fit.budget(chip.hbm_bytes)

  report = {
    "topology": topology,
    "slices": slices,
    "chips": len(devices),
    "device_kind": devices[0].device_kind,
    "hbm_bytes_per_chip": chip.hbm_bytes,
    "headroom": fit.HEADROOM,
    "mesh": dict(mesh.shape),
    "fsdp": bool(config.mesh.fsdp),
    "params": models.param_counts(config.model, vocab)["total"],
    "vocab_rows": vocab,
    "seq_len": config.data.seq_len,
    "links": {
      "ici_ports": links.ici_ports,
      "ici_port_bytes_per_second": links.ici_port,
      "dcn_bytes_per_second_per_chip": links.dcn_per_chip,
    },
    "versions": {
      name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "libtpu", "flax")
    },
  }
  microbatch = None
  if config.batch.microbatch == layout_lib.AUTO:
    microbatch, tried = fit.choose(config.batch, data_parallel, compile_step, chip.hbm_bytes)
    report["auto"] = {
      "chosen": microbatch,
      "budget_bytes": budget,
      "tried": {str(m): b["total"] for m, b in tried.items()},
    }
    if microbatch is None:
      report.update(
        fits=False, largest_fitting_batch=None, wall_seconds=round(time.perf_counter() - start, 2)
      )
      return report
  controller = controller_lib.Controller(
    config.batch, data_parallel, compile_step, microbatch=microbatch
  )
  per_token = flops_lib.train_flops_per_token(config.model, vocab, config.data.seq_len)
  layouts = []
  for size in controller.reachable_sizes():
    for key in controller.keys(size):  # the plain step and, where the size is tested, its variant
      compile_start = time.perf_counter()
      compiled, memory = fit.compile_measured(compile_step, key)
      layouts.append(
        {
          "batch_size": size,
          "microbatch": size // (key[1] * data_parallel),
          "groups": key[1],
          "statistics": key[2],
          "bytes": memory,
          "fits": fit.fits(memory, chip.hbm_bytes),
          "fits_with_headroom": fit.fits(memory, budget),
          "compile_seconds": round(time.perf_counter() - compile_start, 2),
        }
      )
      if compiled is not None:
        model_flops = per_token * size * config.data.seq_len / len(devices)
        host_flops = host_count(config, setup, key)
        communication = interconnect.traffic(compiled.collectives, mesh, links)
        layouts[-1].update(
          _cost(
            compiled,
            host_flops,
            len(devices),
            loop_scale(config, vocab, key[1]),
            model_flops,
            chip,
            communication,
          )
        )
  controller.close()
  fitting = [
    size
    for size in {entry["batch_size"] for entry in layouts}
    if all(e["fits"] for e in layouts if e["batch_size"] == size)
  ]
  report.update(
    layouts=layouts,
    fits=all(entry["fits"] for entry in layouts),
    largest_fitting_batch=max(fitting, default=None),
    wall_seconds=round(time.perf_counter() - start, 2),
  )
  return report


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax  # noqa: PLC0415

  from cbs.config import validation  # noqa: PLC0415

  jax.config.update("jax_platforms", "cpu")  # this host only traces; a TPU here stays free
  try:
    report = check(_CONFIG.value, _TOPOLOGY.value, _SLICES.value, _DCN.value)
  except (UsageError, validation.ConfigError) as e:
    print(f"cbs: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
