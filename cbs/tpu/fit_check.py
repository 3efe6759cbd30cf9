"""Does a config fit a TPU slice: every layout the batch controller can reach, compiled for it.

Compiles the loop's own train step (`compiled_steps.step_compiler`: same mesh, shardings,
FSDP / model axis, scanned layers, remat) for a topology's compile-only devices, with no data:
shapes stand in for arrays. Each layout the controller can reach (every size up to
`batch.max_size`) gets per-chip bytes against the chip's HBM and, where it compiles, its cost
(`step_cost`). `batch.microbatch=auto` is resolved as at run time, from the compiled sizes. Owns the
report's steps and shape; the command line is `cbs.compile_check`.
"""

import importlib.metadata
import time
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from cbs.tpu import collectives
from cbs.tpu import interconnect
from cbs.tpu import step_cost
from cbs.tpu import topology as topology_lib
from cbs.tpu.topology import DCN_HOST_BANDWIDTH
from cbs.tpu.topology import Chip
from cbs.tpu.topology import UsageError


class Target(NamedTuple):
  """What every layout is compiled for: the slice, its mesh and the step's setup on it."""

  chip: Chip
  devices: list
  vocab: int  # embedding rows
  mesh: Any  # jax.sharding.Mesh
  setup: Any  # compiled_steps.StepSetup
  compile_step: Callable  # layout key -> step_cost.Figures, compiled once per key
  links: interconnect.Links


def check(
  config, topology: str, slices: int = 1, dcn_bandwidth: float = DCN_HOST_BANDWIDTH
) -> dict:
  """Compiles every reachable layout of `config` for the topology; the report as a dict."""
  start = time.perf_counter()
  if not dcn_bandwidth > 0:
    raise UsageError(f"--dcn_bandwidth={dcn_bandwidth} must be positive (bytes/s per host)")
  chip, devices = topology_lib.topology_devices(topology, slices)  # fails before heavy imports
  from cbs.batching import layout as layout_lib  # noqa: PLC0415

  target = _target(config, chip, devices, slices, dcn_bandwidth)
  report = _header(config, topology, slices, target)
  microbatch = None
  if config.batch.microbatch == layout_lib.AUTO:
    microbatch, report["auto"] = _auto_microbatch(config, target)
    if microbatch is None:
      report.update(
        fits=False, largest_fitting_batch=None, wall_seconds=round(time.perf_counter() - start, 2)
      )
      return report
  layouts = _compile_layouts(config, target, microbatch)
  report.update(
    layouts=layouts,
    fits=all(entry["fits"] for entry in layouts),
    largest_fitting_batch=_largest_fitting(layouts),
    wall_seconds=round(time.perf_counter() - start, 2),
  )
  return report


def _target(config, chip: Chip, devices: list, slices: int, dcn_bandwidth: float) -> Target:
  """The config validated for the slice (no data read), its mesh and the step compiler."""
  from cbs import compiled_steps  # noqa: PLC0415
  from cbs.config import validation  # noqa: PLC0415
  from cbs.parallel import sharding  # noqa: PLC0415

  validation.validate(config, len(devices), read_data=False)  # compiling reads no data
  vocab = vocab_rows(config)
  try:
    mesh = sharding.make_mesh(config.mesh, devices)
  except ValueError as e:  # e.g. a mesh that does not split evenly over the slices
    raise UsageError(str(e)) from None
  setup = compiled_steps.step_setup(config, vocab, mesh)
  compile_step = step_cost.figures_of(
    compiled_steps.step_compiler(config, setup),
    lambda compiled: collectives.count(compiled.as_text(), slices),
  )
  links = topology_lib.links_of(chip, devices, dcn_bandwidth)
  return Target(chip, devices, vocab, mesh, setup, compile_step, links)


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


def _header(config, topology: str, slices: int, target: Target) -> dict:
  """The report's first part: the slice, the mesh, the model and the software versions."""
  from cbs import models  # noqa: PLC0415
  from cbs.batching import memory_fit as fit  # noqa: PLC0415

  chip, devices, links = target.chip, target.devices, target.links
  return {
    "topology": topology,
    "slices": slices,
    "chips": len(devices),
    "device_kind": devices[0].device_kind,
    "hbm_bytes_per_chip": chip.hbm_bytes,
    "headroom": fit.HEADROOM,
    "mesh": dict(target.mesh.shape),
    "fsdp": bool(config.mesh.fsdp),
    "params": models.param_counts(config.model, target.vocab)["total"],
    "vocab_rows": target.vocab,
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


def _auto_microbatch(config, target: Target) -> tuple[int | None, dict]:
  """`batch.microbatch=auto` resolved as at run time (None: none fits), and what was tried."""
  from cbs.batching import memory_fit as fit  # noqa: PLC0415

  data_parallel = target.setup.placement.data_parallel
  hbm = target.chip.hbm_bytes
  microbatch, tried = fit.choose(config.batch, data_parallel, target.compile_step, hbm)
  return microbatch, {
    "chosen": microbatch,
    "budget_bytes": fit.budget(hbm),
    "tried": {str(m): b["total"] for m, b in tried.items()},
  }


def _compile_layouts(config, target: Target, microbatch: int | None) -> list[dict]:
  """One entry per reachable layout: the plain step and, where the size is tested, its variant."""
  from cbs.batching import controller as controller_lib  # noqa: PLC0415

  data_parallel = target.setup.placement.data_parallel
  controller = controller_lib.Controller(
    config.batch, data_parallel, target.compile_step, microbatch=microbatch
  )
  layouts = [
    _layout(config, target, size, key)
    for size in controller.reachable_sizes()
    for key in controller.keys(size)
  ]
  controller.close()
  return layouts


def _layout(config, target: Target, size: int, key: tuple) -> dict:
  """One layout compiled: its bytes, whether it fits, and where it compiled, its cost."""
  from cbs.batching import memory_fit as fit  # noqa: PLC0415

  hbm = target.chip.hbm_bytes
  compile_start = time.perf_counter()
  compiled, memory = fit.compile_measured(target.compile_step, key)
  entry = {
    "batch_size": size,
    "microbatch": size // (key[1] * target.setup.placement.data_parallel),
    "groups": key[1],
    "statistics": key[2],
    "bytes": memory,
    "fits": fit.fits(memory, hbm),
    "fits_with_headroom": fit.fits(memory, fit.budget(hbm)),
    "compile_seconds": round(time.perf_counter() - compile_start, 2),
  }
  if compiled is not None:
    entry.update(_cost(config, target, size, key, compiled))
  return entry


def _cost(config, target: Target, size: int, key: tuple, compiled: step_cost.Figures) -> dict:
  """The layout's FLOPs per chip, its collectives' traffic and time, the step-time estimate."""
  from cbs.metrics import flops as flops_lib  # noqa: PLC0415

  chips, seq_len = len(target.devices), config.data.seq_len
  per_token = flops_lib.train_flops_per_token(config.model, target.vocab, seq_len)
  model_flops = per_token * size * seq_len / chips
  host_flops = step_cost.host_count(config, target.setup, key)
  communication = interconnect.traffic(compiled.collectives, target.mesh, target.links)
  return step_cost.layout_cost(
    compiled,
    host_flops,
    chips,
    step_cost.loop_scale(config, target.vocab, key[1]),
    model_flops,
    target.chip,
    communication,
  )


def _largest_fitting(layouts: list[dict]) -> int | None:
  """The largest batch size all of whose layouts fit the chip's HBM."""
  fitting = [
    size
    for size in {entry["batch_size"] for entry in layouts}
    if all(e["fits"] for e in layouts if e["batch_size"] == size)
  ]
  return max(fitting, default=None)
