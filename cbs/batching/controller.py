"""The batch-size controller: current size, compiled step per layout, and when to switch.

It keeps one compiled train step per (size, groups, statistics) key, compiles the next likely layout
ahead of time in a background thread so a switch does not stall training, and decides switches from
the token count (ramps) or from the gradient statistics the step returns (tests, every
`batch.test_interval` steps until the cap). Its state - size, smoothed statistics, switch history -
is JSON and goes into every checkpoint, so a resumed run makes the same decisions.
"""

from collections.abc import Callable
import concurrent.futures
import math
import time

import ml_collections
import numpy as np
from absl import logging

from cbs.batching import layout as layout_lib
from cbs.batching import schedules
from cbs.batching import statistics as stats_lib

StepKey = tuple[int, int, str]  # (global batch, groups in the scan, statistics computed)


class Controller:
  """Chooses each step's batch size and hands out the compiled step for it."""

  def __init__(self, batch_cfg: ml_collections.ConfigDict, data_parallel: int,
               compile_step: Callable[[StepKey], Callable], microbatch: int | None = None):
    """`microbatch` (per device) replaces `batch.microbatch`: the size `batch.microbatch=auto` chose."""
    self._cfg = batch_cfg
    self._microbatch = layout_lib.default_microbatch(
        batch_cfg.size, data_parallel, batch_cfg.microbatch if microbatch is None else microbatch)
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
    return layout_lib.round_size(math.ceil(size), self._unit, self._cfg.round,
                                 schedules.max_size(self._cfg))

  @property
  def size(self) -> int:
    return self.state["size"]

  def growing(self, size: int | None = None) -> bool:
    """Whether an adaptive test may still grow the batch."""
    return (self._cfg.schedule in schedules.ADAPTIVE
            and (self.size if size is None else size) < self._cap)

  def testing(self, size: int | None = None) -> bool:
    """Whether the step computes gradient statistics: to grow the batch, or to monitor the noise."""
    return self._statistics != "none" and (self.growing(size) or self._cfg.gns_every > 0)

  def key(self, size: int) -> StepKey:
    accumulation = layout_lib.make(size, self._microbatch, self._unit // self._microbatch).accumulation
    statistics = self._statistics if self.testing(size) else "none"
    groups = max(accumulation, 2) if statistics != "none" else accumulation
    return size, groups, statistics

  def reachable_sizes(self) -> list[int]:
    """Every size this run can switch to, from the current one up to the cap: one layout each."""
    if self._cfg.schedule in schedules.STAGEWISE and self._cfg.ramp_tokens <= 0:
      return sorted({self.size} | {self._round(size) for _, size in schedules.stages(self._cfg)
                                   if self._round(size) > self.size})
    sizes = [self.size]
    while sizes[-1] < self._cap:
      sizes.append(self._round(sizes[-1] + 1))
    return sizes

  def lr_multiplier(self) -> float:
    return schedules.lr_multiplier(self._cfg, self.size)

  # ---- compiled steps ------------------------------------------------------------------------------
  def prepare(self, size: int) -> None:
    """Starts compiling the step of `size` in the background, unless it exists or is under way."""
    if size != self.size and not self._cfg.precompile:
      return
    key = self.key(size)
    if key not in self._compiled and key not in self._pending:
      self._pending[key] = self._executor.submit(self._timed_compile, key)

  def _timed_compile(self, key: StepKey):
    start = time.perf_counter()
    return self._compile(key), time.perf_counter() - start

  def step_fn(self) -> Callable:
    """The compiled step of the current size, waiting for (or doing) its compilation if needed."""
    key = self.key(self.size)
    if key not in self._compiled:
      self.prepare(self.size)
      start = time.perf_counter()
      self._compiled[key], compile_seconds = self._pending.pop(key).result()
      stall = time.perf_counter() - start
      if self.state["history"] and "stall_seconds" not in self.state["history"][-1]:
        self.state["history"][-1].update(compile_seconds=round(compile_seconds, 3),
                                          stall_seconds=round(stall, 3))
        logging.info("batch size %d ready: compiled in %.2fs, training waited %.2fs", self.size,
                     compile_seconds, stall)
      self.prepare(self._candidate())
    return self._compiled[key]

  def compiled_keys(self) -> list[StepKey]:
    return sorted(self._compiled)

  def _candidate(self) -> int:
    """The size most likely to come next: the next ramp stage, or double the current size."""
    if self._cfg.schedule in schedules.STAGEWISE and self._cfg.ramp_tokens <= 0:
      later = [self._round(size) for _, size in schedules.stages(self._cfg)
               if self._round(size) > self.size]
      return min(later, default=self.size)
    return self._round(2 * self.size)

  # ---- decisions -----------------------------------------------------------------------------------
  def before_step(self, step: int, tokens: int) -> int:
    """Applies the token schedule; returns this step's batch size."""
    if self._cfg.schedule in schedules.STAGEWISE:
      self._switch(step, tokens, self._round(schedules.scheduled_size(self._cfg, tokens)),
                   self._cfg.schedule)
    return self.size

  def wants_statistics(self, step: int) -> bool:
    interval = self._cfg.test_interval if self.growing() else self._cfg.gns_every
    return self.testing() and step % interval == 0

  def observe(self, step: int, tokens: int, metrics: dict) -> None:
    """Updates the smoothed statistics from one step's sums and grows the batch if a test fails."""
    _, groups, statistics = self.key(self.size)
    group_size = self.size // groups
    current = stats_lib.noise(float(metrics["group_sq_norm_mean"]), float(metrics["grad_sq_norm"]),
                              groups, group_size)
    if statistics == "full":
      dots, orth = np.asarray(metrics["group_dots"]), np.asarray(metrics["group_orth_sq_norms"])
      current["inner_product_size"] = stats_lib.inner_product_size(
          dots, current["grad_sq_norm"], group_size, self._cfg.theta)
      current["orthogonality_size"] = stats_lib.orthogonality_size(
          orth, current["grad_sq_norm"], group_size, self._cfg.nu)
    smoothed = stats_lib.smooth(self.state["smoothed"], current, self._cfg.stats_ema)
    self.state["smoothed"] = smoothed
    if not self.growing():  # monitoring only (batch.gns_every): log the noise scale
      self.last_statistics = {"grad_noise_scale": stats_lib.noise_scale(
          smoothed["trace"], smoothed["true_sq_norm"])}
      return
    requested = schedules.requested_size(self._cfg, smoothed)
    self.last_statistics = {
        "grad_noise_scale": stats_lib.noise_scale(smoothed["trace"], smoothed["true_sq_norm"]),
        "norm_test_stat": stats_lib.norm_test_size(smoothed["trace"], smoothed["grad_sq_norm"],
                                                   self._cfg.eta),
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
    logging.info("batch size %d -> %d at step %d (%s tokens) by %s", self.size, new_size, step,
                 f"{tokens:,}", reason)
    self.state["history"].append({"step": step, "tokens": tokens, "old": self.size,
                                  "new": new_size, "reason": reason})
    self.state["size"] = new_size

  # ---- checkpointing -------------------------------------------------------------------------------
  def get_state(self) -> dict:
    return {"size": self.size, "smoothed": self.state["smoothed"],
            "history": [dict(h) for h in self.state["history"]]}

  def set_state(self, state: dict) -> None:
    self.state = {"size": int(state["size"]), "smoothed": state["smoothed"],
                  "history": [dict(h) for h in state["history"]]}

  def close(self) -> None:
    self._executor.shutdown(wait=True, cancel_futures=True)
