"""The batch-size controller: current size, compiled steps per layout, and when to switch.

Each layout has two compiled train steps: the plain one, and the statistics variant that also
returns the gradient-noise sums of M = `batch.test_groups` groups. A step runs the variant only when
its statistics are read (every `batch.test_interval` steps while an adaptive test may still grow the
batch, every `batch.gns_every` steps to monitor the noise), so statistics cost nothing on the other
steps. The loop asks for one `StepPlan` per step (`plan`) and hands back the statistics steps'
`NoiseSums` (`observe`). Steps are keyed (size, microbatches in the scan, statistics); both
variants of the next likely layout are compiled ahead of time in a background thread so a switch
does not stall training.
Switches come from the token count (ramps) or from the statistics (tests). A non-finite step's
statistics are dropped, never averaged in. The controller's state - size, smoothed statistics,
switch history - is JSON and goes into every checkpoint, so a resumed run makes the same decisions.
"""

import concurrent.futures
import math
import time
from collections.abc import Callable

import ml_collections
from absl import logging

from cbs.batching import layout as layout_lib
from cbs.batching import schedules
from cbs.batching import statistics as stats_lib
from cbs.batching.noise_sums import NoiseSums
from cbs.batching.step_plan import StepKey
from cbs.batching.step_plan import StepPlan


class Controller:
  """Chooses each step's batch size and hands out the compiled step for it."""

  def __init__(
    self,
    batch_cfg: ml_collections.ConfigDict,
    data_parallel: int,
    compile_step: Callable[[StepKey], Callable],
    local_groups: bool = False,
    microbatch: int | None = None,
  ):
    """`local_groups`: the statistics step takes each data-parallel device's local gradient of
    each microbatch as a group (`cbs.step.local_groups`), so M = data-parallel x microbatches.
    `microbatch` (per device) replaces `batch.microbatch`: the size `batch.microbatch=auto` chose."""
    self._cfg = batch_cfg
    self._data_parallel = data_parallel
    self._group_devices = data_parallel if local_groups else 1
    self._microbatch = layout_lib.default_microbatch(
      batch_cfg.size, data_parallel, batch_cfg.microbatch if microbatch is None else microbatch
    )
    self._unit = self._microbatch * data_parallel
    self._cap = self._round(schedules.max_size(batch_cfg))
    self._statistics = schedules.statistics_needed(batch_cfg)
    self._compile = compile_step
    self._compiled: dict[StepKey, Callable] = {}
    self._pending: dict[StepKey, concurrent.futures.Future] = {}
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cbs-compile")
    self.state = {"size": self._round(batch_cfg.size), "smoothed": None, "history": []}
    self.last_statistics: dict[str, float] = {}

  # ---- sizes and layouts ---------------------------------------------------------------------------
  def _round(self, size: float) -> int:
    return layout_lib.round_size(
      math.ceil(size), self._unit, self._cfg.round, schedules.max_size(self._cfg)
    )

  @property
  def size(self) -> int:
    return self.state["size"]

  def growing(self, size: int | None = None) -> bool:
    """Whether an adaptive test may still grow the batch."""
    return schedules.adaptive(self._cfg) and (self.size if size is None else size) < self._cap

  def testing(self, size: int | None = None) -> bool:
    """Whether the step computes gradient statistics: to grow the batch, or to monitor the noise."""
    return self._statistics != "none" and (self.growing(size) or self._cfg.gns_every > 0)

  def accumulation(self, size: int) -> int:
    """Microbatches per step of the plain step at `size`."""
    return layout_lib.make(size, self._microbatch, self._data_parallel).accumulation

  def _test_microbatches(self, size: int) -> int:
    """The statistics step's scan length: at least the plain step's (so no more memory), enough
    for `batch.test_groups` groups (default: one per device and microbatch, at least 2), and
    dividing each device's rows; at most one sequence per group and device."""
    accumulation, rows = self.accumulation(size), size // self._data_parallel
    wanted = (
      self._cfg.test_groups
      if self._cfg.test_groups > 0
      else max(self._group_devices * accumulation, 2)
    )
    shortest = max(accumulation, math.ceil(wanted / self._group_devices))
    return next((k for k in range(shortest, rows) if rows % k == 0), rows)

  def test_groups(self, size: int) -> int:
    """M, the groups the statistics of `size` come from."""
    return self._group_devices * self._test_microbatches(size)

  def key(self, size: int, statistics: bool = False) -> StepKey:
    """The plain step of `size`, or its statistics variant (where `size` is tested)."""
    if statistics and self.testing(size):
      return StepKey(size, self._test_microbatches(size), self._statistics)
    return StepKey(size, self.accumulation(size), "none")

  def keys(self, size: int) -> list[StepKey]:
    """The variants a run at `size` may use, the more frequent first."""
    if not self.testing(size):
      return [self.key(size)]
    every_step = self._interval(size) == 1
    return [self.key(size, True)] if every_step else [self.key(size), self.key(size, True)]

  def reachable_sizes(self) -> list[int]:
    """Every size this run can switch to, from the current one up to the cap: one layout each."""
    if schedules.SCHEDULES[self._cfg.schedule].stagewise and self._cfg.ramp_tokens <= 0:
      return sorted(
        {self.size}
        | {
          self._round(size)
          for _, size in schedules.stages(self._cfg)
          if self._round(size) > self.size
        }
      )
    sizes = [self.size]
    while sizes[-1] < self._cap:
      sizes.append(self._round(sizes[-1] + 1))
    return sizes

  def lr_multiplier(self) -> float:
    return schedules.lr_multiplier(self._cfg, self.size)

  # ---- compiled steps ------------------------------------------------------------------------------
  def prepare(self, size: int) -> None:
    """Starts compiling the steps of `size` in the background, unless done or under way."""
    if size != self.size and not self._cfg.precompile:
      return
    for key in self.keys(size):
      self._submit(key)

  def _submit(self, key: StepKey) -> None:
    if key not in self._compiled and key not in self._pending:
      self._pending[key] = self._executor.submit(self._timed_compile, key)

  def _timed_compile(self, key: StepKey):
    start = time.perf_counter()
    return self._compile(key), time.perf_counter() - start

  def step_fn(self, statistics: bool = False) -> Callable:
    """The compiled step of the current size - with statistics or plain - waiting for (or doing)
    its compilation if needed."""
    key = self.key(self.size, statistics)
    if key not in self._compiled:
      self.prepare(self.size)
      self._submit(key)
      start = time.perf_counter()
      self._compiled[key], compile_seconds = self._pending.pop(key).result()
      stall = time.perf_counter() - start
      if self.state["history"] and "stall_seconds" not in self.state["history"][-1]:
        self.state["history"][-1].update(
          compile_seconds=round(compile_seconds, 3), stall_seconds=round(stall, 3)
        )
        logging.info(
          "batch size %d ready: compiled in %.2fs, training waited %.2fs",
          self.size,
          compile_seconds,
          stall,
        )
      self.prepare(self._candidate())
    return self._compiled[key]

  def _candidate(self) -> int:
    """The size most likely to come next: the next ramp stage, or double the current size."""
    if schedules.SCHEDULES[self._cfg.schedule].stagewise and self._cfg.ramp_tokens <= 0:
      later = [
        self._round(size)
        for _, size in schedules.stages(self._cfg)
        if self._round(size) > self.size
      ]
      return min(later, default=self.size)
    return self._round(2 * self.size)

  # ---- decisions -----------------------------------------------------------------------------------
  def plan(self, step: int, tokens: int) -> StepPlan:
    """Step `step + 1`, starting at `tokens`: the token schedule applied, the variant chosen (the
    statistics one only where they are read), its compiled step ready."""
    size = self.before_step(step, tokens)
    statistics = self.wants_statistics(step + 1)
    return StepPlan(self.key(size, statistics), self.lr_multiplier(), self.step_fn(statistics))

  def before_step(self, step: int, tokens: int) -> int:
    """Applies the token schedule; returns this step's batch size."""
    if schedules.SCHEDULES[self._cfg.schedule].stagewise:
      self._switch(
        step, tokens, self._round(schedules.scheduled_size(self._cfg, tokens)), self._cfg.schedule
      )
    return self.size

  def _interval(self, size: int | None = None) -> int:
    return self._cfg.test_interval if self.growing(size) else self._cfg.gns_every

  def wants_statistics(self, step: int) -> bool:
    """Whether step number `step` (counting from 1) runs the statistics variant."""
    return self.testing() and step % self._interval() == 0

  def observe(self, step: int, tokens: int, sums: NoiseSums, nonfinite: bool = False) -> dict:
    """Updates the smoothed statistics from one statistics step and grows the batch if a test
    fails; returns the statistics to record. A non-finite step (skipped by
    `train.on_nonfinite=skip`) changes nothing."""
    groups = self.test_groups(self.size)
    group_size = self.size // groups
    m = sums.as_floats()
    current = stats_lib.noise(m.group_sq_norm_mean, m.grad_sq_norm, groups, group_size)
    if self._statistics == "full":
      current["inner_product_size"] = stats_lib.inner_product_size(
        m.group_dot_dev_mean,
        m.group_dot_dev_sq_mean,
        m.grad_sq_norm,
        groups,
        group_size,
        self._cfg.theta,
      )
      current["orthogonality_size"] = stats_lib.orthogonality_size(
        m.group_dev_sq_norm_mean,
        m.group_dot_dev_sq_mean,
        m.grad_sq_norm,
        groups,
        group_size,
        self._cfg.nu,
      )
    self.last_statistics = {"test_groups": groups}
    if nonfinite or not stats_lib.finite(current):
      logging.warning(
        "step %d: non-finite gradient statistics left out of the batch-size test", step
      )
      return dict(self.last_statistics)
    self._update(step, tokens, current)
    return dict(self.last_statistics)

  def _update(self, step: int, tokens: int, current: dict) -> None:
    """Folds one step's finite statistics into the average; a failed test grows the batch."""
    smoothed = stats_lib.smooth(self.state["smoothed"], current, self._cfg.stats_ema)
    self.state["smoothed"] = smoothed
    self.last_statistics["grad_noise_scale"] = stats_lib.noise_scale(
      smoothed["trace"], smoothed["true_sq_norm"]
    )
    if not self.growing():  # monitoring only (batch.gns_every)
      return
    requested = schedules.requested_size(self._cfg, smoothed)
    self.last_statistics |= {
      "norm_test_stat": stats_lib.norm_test_size(
        smoothed["trace"], smoothed["grad_sq_norm"], self._cfg.eta
      ),
      "requested_batch_size": requested,
    }
    for name in ("inner_product_size", "orthogonality_size"):
      if name in smoothed:
        self.last_statistics[name] = smoothed[name]
    if math.isfinite(requested):
      self._switch(step, tokens, self._round(max(self.size, requested)), self._cfg.schedule)

  def _switch(self, step: int, tokens: int, new_size: int, reason: str) -> None:
    if new_size <= self.size:
      return
    logging.info(
      "batch size %d -> %d at step %d (%s tokens) by %s",
      self.size,
      new_size,
      step,
      f"{tokens:,}",
      reason,
    )
    self.state["history"].append(
      {"step": step, "tokens": tokens, "old": self.size, "new": new_size, "reason": reason}
    )
    self.state["size"] = new_size
    # the batch never shrinks: smaller layouts' steps, compiled or under way (a prefetched stage the
    # batch jumped past), are let go (host and device memory)
    self._compiled = {key: fn for key, fn in self._compiled.items() if key[0] >= new_size}
    for key in [key for key in self._pending if key[0] < new_size]:
      self._pending.pop(key).cancel()

  # ---- checkpointing -------------------------------------------------------------------------------
  def get_state(self) -> dict:
    return {
      "size": self.size,
      "smoothed": self.state["smoothed"],
      "history": [dict(h) for h in self.state["history"]],
    }

  def set_state(self, state: dict) -> None:
    smoothed = state["smoothed"]
    if smoothed and not stats_lib.finite(smoothed):  # saved before NaN steps were left out
      logging.warning("restored batch statistics %s are not finite: starting them afresh", smoothed)
      smoothed = None
    self.state = {
      "size": int(state["size"]),
      "smoothed": smoothed,
      "history": [dict(h) for h in state["history"]],
    }

  def close(self) -> None:
    self._executor.shutdown(wait=True, cancel_futures=True)
