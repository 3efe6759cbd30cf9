"""Which per-device microbatch fits in device memory: `batch.microbatch=auto`.

A compiled step states its memory per device ahead of time (arguments, outputs, temporaries), so the
largest microbatch that fits is found by compiling, never by running out of memory after the queue
wait. Memory grows with the microbatch, so a bisection over the allowed microbatches (those that
divide the initial per-device batch) needs a few compiles, not one per candidate.
"""

from collections.abc import Callable

import jax
import ml_collections
from absl import logging

from cbs.batching import controller as controller_lib
from cbs.batching import schedules

HEADROOM = 0.1  # fraction of device memory left free: runtime buffers, fragmentation, the eval step


def compile_measured(
  compile_step: Callable[[controller_lib.StepKey], object], key: controller_lib.StepKey
) -> tuple[object | None, dict]:
  """The compiled step of `key` and its bytes; (None, the compiler's reason) if it cannot fit.

  The TPU compiler refuses a program larger than the chip's memory (RESOURCE_EXHAUSTED).
  """
  try:
    compiled = compile_step(key)
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return None, {"total": None, "error": str(e).splitlines()[0]}
  return compiled, step_bytes(compiled)


def fits(measured: dict, limit: int) -> bool:
  return measured["total"] is not None and measured["total"] <= limit


def step_bytes(compiled) -> dict[str, int]:
  """Per-device bytes of a compiled step; `total` counts donated (aliased) state once."""
  m = compiled.memory_analysis()
  parts = {
    "arguments": m.argument_size_in_bytes,
    "outputs": m.output_size_in_bytes,
    "aliased": m.alias_size_in_bytes,
    "temporaries": m.temp_size_in_bytes,
    "code": m.generated_code_size_in_bytes,
  }
  total = parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temporaries"]
  return {**parts, "total": total + parts["code"]}


def budget(capacity_bytes: int) -> int:
  """The bytes a step may use on a device of `capacity_bytes`."""
  return int(capacity_bytes * (1 - HEADROOM))


def candidates(batch_cfg: ml_collections.ConfigDict, data_parallel: int) -> list[int]:
  """Per-device microbatches that divide the initial batch, ascending.

  Where a test needs gradient statistics, a single microbatch is split in two groups, so it must
  then be even.
  """
  per_device = batch_cfg.size // data_parallel
  testing = schedules.statistics_needed(batch_cfg) != "none"
  return [
    m
    for m in range(1, per_device + 1)
    if per_device % m == 0 and not (testing and m == per_device and m % 2)
  ]


def largest_fitting(sizes: list[int], fits: Callable[[int], bool]) -> int | None:
  """The largest of the ascending `sizes` for which `fits` holds, if memory grows with the size."""
  lo, hi, best = 0, len(sizes) - 1, None
  while lo <= hi:
    mid = (lo + hi) // 2
    if fits(sizes[mid]):
      best, lo = sizes[mid], mid + 1
    else:
      hi = mid - 1
  return best


def choose(
  batch_cfg: ml_collections.ConfigDict,
  data_parallel: int,
  compile_step: Callable[[controller_lib.StepKey], object],
  capacity_bytes: int,
) -> tuple[int | None, dict[int, dict[str, int]]]:
  """The largest microbatch whose first step fits `budget(capacity_bytes)`, and the bytes tried.

  Returns None as the choice when not even one sequence per device fits.
  """
  tried = {}

  def fits_budget(microbatch: int) -> bool:
    controller = controller_lib.Controller(
      batch_cfg, data_parallel, compile_step, microbatch=microbatch
    )
    _, tried[microbatch] = compile_measured(compile_step, controller.key(controller.size))
    controller.close()
    return fits(tried[microbatch], budget(capacity_bytes))

  chosen = largest_fitting(candidates(batch_cfg, data_parallel), fits_budget)
  return chosen, dict(sorted(tried.items()))


def auto_microbatch(
  batch_cfg: ml_collections.ConfigDict,
  data_parallel: int,
  compile_step: Callable[[controller_lib.StepKey], object],
) -> int:
  """`batch.microbatch=auto` at run time, against this host's first device's memory.

  A device that reports no memory limit (CPU) gets the whole initial batch per device (-1).
  """
  capacity = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
  if not capacity:
    logging.info(
      "batch.microbatch=auto: %s reports no memory limit; whole batch per device",
      jax.local_devices()[0].platform,
    )
    return -1
  chosen, tried = choose(batch_cfg, data_parallel, compile_step, capacity)
  if chosen is None:
    raise ValueError(
      f"batch.microbatch=auto: not even 1 sequence per device fits in "
      f"{budget(capacity) / 2**30:.1f} GiB; shard the model (mesh.fsdp, mesh.model) "
      "or use model.remat"
    )
  logging.info(
    "batch.microbatch=auto: %d sequences per device (%s GiB of %.1f GiB)",
    chosen,
    f"{tried[chosen]['total'] / 2**30:.2f}",
    capacity / 2**30,
  )
  return chosen
