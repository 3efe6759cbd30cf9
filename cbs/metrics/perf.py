"""Live performance of a run: step time, tokens/s, model FLOPs/s and MFU, memory, profiler traces.

Throughput counts only training: the time the loop waits for a step to compile (at the start, after
a resume, at a batch-size switch) and the time spent in evals are measured and logged apart, so
the first figure after a start is not diluted by compilation. MFU is model FLOPs per second over
the peak of the mesh's devices: the chip's published peak on GPUs and TPUs, a matmul measured on this
machine on CPUs (`flops.device_peak_flops`).
"""

import time

import jax
from absl import logging
from etils import epath


class Meter:
  """Accumulates one logging interval; `read` returns its figures and starts the next."""

  def __init__(
    self, tokens: int, flops_per_token: float, peak_flops_per_device: float, num_devices: int
  ):
    self._flops_per_token = flops_per_token
    self._peak = peak_flops_per_device * num_devices
    self._restart(tokens)

  def _restart(self, tokens: int) -> None:
    self._start, self._tokens, self._steps = time.monotonic(), tokens, 0
    self._stalled = self._evaluating = self._other = 0.0

  def stalled(self, seconds: float) -> None:
    """Time the loop waited for a compile."""
    self._stalled += seconds

  def evaluating(self, seconds: float) -> None:
    self._evaluating += seconds

  def excluded(self, seconds: float) -> None:
    """Other time that is not training (starting and stopping a profiler trace)."""
    self._other += seconds

  def step(self) -> None:
    self._steps += 1

  def read(self, tokens: int) -> dict[str, float]:
    training = max(
      time.monotonic() - self._start - self._stalled - self._evaluating - self._other, 1e-9
    )
    tokens_per_sec = (tokens - self._tokens) / training
    figures = {
      "tokens_per_sec": tokens_per_sec,
      "perf_step_time": training / max(self._steps, 1),
      "perf_flops_per_sec": tokens_per_sec * self._flops_per_token,
      "perf_mfu": tokens_per_sec * self._flops_per_token / self._peak,
      "perf_compile_stall_seconds": self._stalled,
      "perf_eval_seconds": self._evaluating,
    }
    memory = device_memory_in_use()
    if memory is not None:
      figures["perf_memory_bytes"] = memory
    self._restart(tokens)
    return figures


def device_memory_in_use() -> int | None:
  """The largest memory in use on one local device, where the backend reports it."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  used = [s["bytes_in_use"] for s in stats if s and "bytes_in_use" in s]
  return max(used) if used else None


class ProfileWindow:
  """A jax.profiler trace of `steps` steps from the first step at or after `start_tokens`.

  The trace goes to `WORKDIR/plugins/profile/<time>/`, where TensorBoard's profile tab (and
  Perfetto, from the `.xplane.pb`) finds it. `start_tokens < 0` turns it off; a run resumed after
  `start_tokens` does not trace again. Each call returns the seconds it took, which are not training.
  """

  def __init__(self, workdir: epath.PathLike, start_tokens: int, steps: int, run_tokens: int):
    self._workdir, self._start_tokens, self._steps = str(workdir), start_tokens, steps
    # Steps traced so far while tracing; None before, -1 after (or never, in a resumed run).
    self._traced = None if 0 <= start_tokens and run_tokens <= start_tokens else -1

  def before_step(self, tokens: int) -> float:
    if self._traced is not None or tokens < self._start_tokens:
      return 0.0
    started = time.monotonic()
    jax.profiler.start_trace(self._workdir)
    self._traced = 0
    logging.info(
      "profiling %d steps from %s tokens into %s/plugins/profile",
      self._steps,
      f"{tokens:,}",
      self._workdir,
    )
    return time.monotonic() - started

  def after_step(self, state) -> float:
    if self._traced is None or self._traced < 0:
      return 0.0
    self._traced += 1
    return self.stop(state) if self._traced == self._steps else 0.0

  def stop(self, state=None) -> float:
    """Ends a trace in progress (after the last traced step has finished on the devices)."""
    if self._traced is None or self._traced < 0:
      return 0.0
    started = time.monotonic()
    jax.block_until_ready(state)
    jax.profiler.stop_trace()
    self._traced = -1
    return time.monotonic() - started
