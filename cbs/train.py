"""The training loop: a run's setup, its starting point, then one step after another.

Plain Python around two compiled pure functions. The host owns the counters (step, tokens, data
position) and computes the learning rate and EWA decays from the token count, so the device never
waits on the host and the host reads device values only at logging, eval and checkpoint points.
Setup is `cbs.run.setup`, the starting point `cbs.run.resume`, what each step looks like the batch
controller's `StepPlan`, why the run stops `cbs.run.stopping.stop_reason`, and what its two ends
write `cbs.run.bookends`; the loop gives each per-step duty (step, log, evaluate, save) a name
and a token cadence.
"""

import contextlib
import time
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

from cbs import quiet_tensorflow  # noqa: F401  (before clu, which imports TensorFlow)

# isort: split
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from cbs import cadence
from cbs import eval_schedule
from cbs import train_state
from cbs.batching.step_plan import StepPlan
from cbs.metrics import flops
from cbs.metrics import perf
from cbs.metrics import writers as metrics
from cbs.optim import ewa
from cbs.optim import optimizers as optim
from cbs.parallel import sharding
from cbs.run import bookends
from cbs.run import resume
from cbs.run import setup as run_setup
from cbs.run.progress import Progress
from cbs.run.step_log import StepLog
from cbs.run.stopping import NonFiniteError
from cbs.run.stopping import StopReason
from cbs.run.stopping import StopRequest
from cbs.run.stopping import stop_reason

__all__ = ["NonFiniteError", "evaluate", "train_and_evaluate"]

_LOGGED = ("loss", "grad_norm", "param_norm", "nonfinite")  # step metrics written every step


class Due(NamedTuple):
  """The duties that fall on a step, each on its own cadence."""

  log: bool
  evaluate: bool
  save: bool


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, stop_after_steps: int | None = None
) -> dict:
  """Trains until `config.train_tokens` (or for `stop_after_steps` more steps, then checkpoints).

  Returns the final progress record, with `resumed_from` (the restored step, None for a fresh
  start) and `steps_run` (steps trained by this call). Running again with the same workdir resumes
  from its latest checkpoint; a finished run returns at once. Whatever way it ends, it leaves no
  thread, signal handler, open checkpoint manager or writer behind.
  """
  with contextlib.ExitStack() as resources:
    return _train(config, workdir, stop_after_steps, resources)


def _train(
  config: ml_collections.ConfigDict,
  workdir: str,
  stop_after_steps: int | None,
  resources: contextlib.ExitStack,
) -> dict:
  """`train_and_evaluate`, whose resources `resources` releases on every way out."""
  run = run_setup.build(config, workdir, resources)
  start = resume.start(run)
  if start.progress.tokens >= config.train_tokens:
    return bookends.already_finished(run, start)
  writer = metrics.make_writer(run.workdir, run.is_main_host)
  resources.callback(writer.close)
  bookends.write_run_start(run, start, writer)
  progress, reason, steps_run = _loop(run, start, writer, stop_after_steps, resources)
  return bookends.finish(run, start, progress, reason, steps_run)


def _loop(
  run: run_setup.RunSetup,
  start: resume.Start,
  writer: metric_writers.MetricWriter,
  stop_after_steps: int | None,
  resources: contextlib.ExitStack,
) -> tuple[Progress, StopReason, int]:
  """Steps until `stop_reason` names a reason; the last progress saved, the reason, steps run."""
  config, controller, checkpoints = run.config, run.controller, run.checkpoints
  state, progress = start.state, start.progress
  step, tokens, steps_run, reason = progress.step, progress.tokens, 0, None
  meter = _meter(run, tokens)
  profile = perf.ProfileWindow(
    run.workdir, config.profile.start_tokens, config.profile.steps, tokens
  )
  resources.callback(profile.stop)
  log = StepLog(
    writer,
    metrics.ProgressLog(config.train_tokens, tokens),
    progress.skipped_steps or 0,
    _nonfinite_stop(run),
  )
  stop_request = resources.enter_context(StopRequest())
  controller.prepare(controller.size)
  while reason is None:
    waited = time.monotonic()
    plan = controller.plan(step, tokens)
    meter.stalled(time.monotonic() - waited)  # a layout still compiling (start, resume, switch)
    state, record = _step(run, plan, state, step, tokens, (meter, profile))
    tokens_before, tokens, step, steps_run = tokens, record["tokens"], step + 1, steps_run + 1
    log.add(step, record)
    preempted = stop_request.is_set() or checkpoints.reached_preemption(step)
    reason = stop_reason(config, tokens, steps_run, stop_after_steps, preempted)
    due = _due(config, step, tokens_before, tokens, reason)
    checkpoints.check_writes(step, agree=due.log)  # a failed background save stops the run here
    if due.log:
      log.write(step, tokens, meter)
    if due.evaluate:
      losses = _evaluate(run, state, step, tokens, writer, meter)
      reason = stop_reason(config, tokens, steps_run, stop_after_steps, preempted, losses)
    if due.save or reason is not None:
      progress = _save(run, state, step, tokens, log.skipped_steps, writer)
  profile.stop(state)
  checkpoints.wait(step)
  return progress, reason, steps_run


def _due(
  config: ml_collections.ConfigDict,
  step: int,
  tokens_before: int,
  tokens: int,
  reason: StopReason | None,
) -> Due:
  """Eval on its token schedule and at the end; save on its cadence and whenever the run stops;
  log on its step cadence and before either (their records are then complete)."""
  evaluate = eval_schedule.due(config.eval, tokens_before, tokens) or reason is StopReason.TOKENS
  save = cadence.crossed(tokens_before, tokens, config.checkpoint.every_tokens) or (
    reason is not None
  )
  return Due(
    log=step % config.log.every_steps == 0 or evaluate or save, evaluate=evaluate, save=save
  )


def _step(
  run: run_setup.RunSetup,
  plan: StepPlan,
  state: Any,
  step: int,
  tokens: int,
  timers: tuple[perf.Meter, perf.ProfileWindow],
) -> tuple[Any, dict]:
  """Step `step + 1` as planned, from `tokens`; the new state and the step's record (device
  scalars, read at the next log point, except a statistics step's sums: a decision)."""
  config, (meter, profile) = run.config, timers
  step_tokens = plan.size * config.data.seq_len
  lr = float(run.lr_at(tokens)) * plan.lr_multiplier
  wd = optim.weight_decay_at(
    config.optimizer, step_tokens, config.optimizer.lr * plan.lr_multiplier, config.train_tokens
  )
  batch = sharding.to_global(run.data.train.next_batch(plan.size), run.placement.batch)
  meter.excluded(profile.before_step(tokens))
  state, step_metrics = plan.step_fn(
    state, batch, np.float32(lr), np.float32(wd), ewa.taus(config.ewa, step_tokens)
  )
  meter.excluded(profile.after_step(state))
  meter.step()
  record = {
    "tokens": tokens + step_tokens,
    "batch_size": plan.size,
    "lr": lr,
    "weight_decay": wd,
    "accum_steps": plan.accum_steps,
    **{k: step_metrics[k] for k in _LOGGED},
  }
  if plan.tested:
    sums, nonfinite = jax.device_get((step_metrics["noise"], step_metrics["nonfinite"]))
    record.update(run.controller.observe(step + 1, record["tokens"], sums, bool(nonfinite)))
  return state, record


def evaluate(
  eval_fn,
  state: train_state.State,
  batches: list,
  batch_sharding,
  ewa_cfg: ml_collections.ConfigDict,
) -> dict[str, float]:
  """Mean held-out loss of the raw weights and of each bias-corrected weight average."""
  weights = {"eval_loss": state["params"]}
  for name in ewa.names(ewa_cfg):
    weights[f"eval_loss_ewa_{name}"] = ewa.averaged_params(state["ewa"], name)
  sums = {key: [] for key in weights}
  for batch in batches:
    device_batch = sharding.to_global(batch, batch_sharding)
    for key, params in weights.items():
      sums[key].append(eval_fn(params, device_batch))
  sums = jax.device_get(sums)
  return {
    key: float(sum(s["loss_sum"] for s in parts) / sum(s["weight_sum"] for s in parts))
    for key, parts in sums.items()
  }


def _evaluate(
  run: run_setup.RunSetup,
  state: Any,
  step: int,
  tokens: int,
  writer: metric_writers.MetricWriter,
  meter: perf.Meter,
) -> dict[str, float]:
  """The eval duty: held-out losses, written and logged against the data's loss floors."""
  started = time.monotonic()
  losses = evaluate(
    run.eval_step, state, run.data.eval_batches, run.placement.batch, run.config.ewa
  )
  meter.evaluating(time.monotonic() - started)
  writer.write_scalars(step, {"tokens": tokens, **losses})
  logging.info(
    "eval at step %d: %s%s",
    step,
    "  ".join(f"{k} {v:.4f}" for k, v in losses.items()),
    metrics.floor_gaps(losses, run.data.floors),
  )
  return losses


def _save(
  run: run_setup.RunSetup,
  state: Any,
  step: int,
  tokens: int,
  skipped_steps: int,
  writer: metric_writers.MetricWriter,
) -> Progress:
  """The save duty: a checkpoint of the state and the progress record, written in the background."""
  progress = Progress(
    step=step,
    tokens=tokens,
    seed=run.config.seed,
    data=run.data.train.get_state(),
    data_identity=run.data_identity,
    batch=run.controller.get_state(),
    skipped_steps=skipped_steps,
  )
  writer.flush()
  run.checkpoints.save(step, state, progress.as_dict(), run.config.to_dict())
  return progress


def _nonfinite_stop(run: run_setup.RunSetup) -> Callable[[int, list], None] | None:
  """Under `train.on_nonfinite=stop`: what a log point that read a non-finite step does."""
  if run.config.train.on_nonfinite != "stop":
    return None

  def stop(step: int, bad: list[tuple[int, int]]) -> None:
    run.checkpoints.wait(step)  # the last good checkpoint is complete before the run ends
    latest = run.checkpoints.latest_step()
    kept = (
      f"the latest complete checkpoint is step {latest} in {run.workdir}"
      if latest is not None
      else f"no checkpoint was written yet in {run.workdir}"
    )
    raise NonFiniteError(
      f"non-finite loss or gradient at step {bad[0][0]} ({bad[0][1]:,} tokens); {kept} "
      "(set train.on_nonfinite=skip to skip such steps)"
    )

  return stop


def _meter(run: run_setup.RunSetup, tokens: int) -> perf.Meter:
  """Speed and MFU per log interval, against the chip's peak (or this machine's measured one)."""
  config = run.config
  peak, peak_source = flops.device_peak_flops(config.model.dtype)
  logging.info("MFU against %s FLOP/s per device (%s)", f"{peak:.3g}", peak_source)
  per_token = flops.train_flops_per_token(config.model, run.data.vocab_size, config.data.seq_len)
  return perf.Meter(tokens, per_token, peak, run.placement.mesh.devices.size)
