"""What one compiled step costs on a TPU chip: its figures, its FLOPs and its time's range.

Owns what is read of a compiled executable (`Figures`, kept instead of it), the step's FLOPs (XLA's
count of the unpartitioned program on this host, scaled by the loops it counts once), and the
step-time range with the MFU bounds it gives (compute, HBM traffic and communication, overlapped
or not). Knows nothing of batch layouts or the report's shape beyond one layout's entry.
"""

import dataclasses
import functools
import gc

from cbs.tpu.topology import Chip


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


def layout_cost(
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
