"""The training loop: wires data, mesh, state, compiled steps, metrics and checkpoints together.

Plain Python around two compiled pure functions. The host owns the counters (step, tokens, data
position) and computes the learning rate and EWA decays from the token count, so the device never
waits on the host and the host reads device values only at logging, eval and checkpoint points.
"""

import contextlib
import functools
import json
import signal
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from cbs import checkpoint
from cbs import convert_checkpoint
from cbs import data as data_lib
from cbs import eval_schedule
from cbs import ewa
from cbs import flops
from cbs import metrics
from cbs import models
from cbs import optim
from cbs import perf
from cbs import records
from cbs import lr_schedules
from cbs import sharding
from cbs import step as step_lib
from cbs import train_state
from cbs import validation
from cbs import workdir_lock
from cbs.batching import controller as controller_lib
from cbs.batching import fit
from cbs.batching import layout as layout_lib
from cbs.data import identity as data_identity
from cbs.data import stream as data_stream


_LOGGED = ("loss", "grad_norm", "param_norm", "nonfinite")  # step metrics written every step


class NonFiniteError(RuntimeError):
  """The loss or gradient became NaN/Inf under `train.on_nonfinite=stop`."""


class StopRequest(contextlib.AbstractContextManager):
  """SIGTERM / SIGINT ask the loop to finish its step, checkpoint and return (preemption).

  Installed only in the main thread (signals cannot be caught elsewhere), on entering; leaving
  (`restore`) puts the previous handlers back.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    self.restore()

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("received %s: stopping after this step", signal.Signals(signum).name)
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def _crossed(tokens_before: int, tokens_after: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (before, after]: cadences in tokens, any batch size."""
  return every > 0 and tokens_after // every > tokens_before // every


def evaluate(eval_fn, state: train_state.State, batches: list, batch_sharding,
             ewa_cfg: ml_collections.ConfigDict) -> dict[str, float]:
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
  return {key: float(sum(s["loss_sum"] for s in parts) / sum(s["weight_sum"] for s in parts))
          for key, parts in sums.items()}


def step_arguments(config: ml_collections.ConfigDict, state_abstract, size: int,
                   batch_sharding=None) -> tuple:
  """Shapes (and placements) of a train step's arguments at batch `size`, for lowering it."""
  batch = {name: jax.ShapeDtypeStruct((size, config.data.seq_len), dtype, sharding=batch_sharding)
           for name, dtype in (("inputs", jnp.int32), ("targets", jnp.int32),
                               ("weights", jnp.float32))}
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  taus = {name: scalar for name in ewa.names(config.ewa)}
  return state_abstract, batch, scalar, scalar, taus


def bound_step(config: ml_collections.ConfigDict, state_layout: train_state.StateLayout,
               tx: optax.GradientTransformation, key: controller_lib.StepKey, data_parallel: int,
               device_groups=None) -> Callable:
  """The pure train step of the layout `key`, its static arguments bound."""
  _, groups, statistics = key
  return functools.partial(step_lib.train_step, graphdef=state_layout.graphdef, tx=tx,
                           groups=groups, data_parallel=data_parallel, statistics=statistics,
                           device_groups=device_groups,
                           skip_nonfinite=config.train.on_nonfinite == "skip")


def step_compiler(config: ml_collections.ConfigDict, state_layout: train_state.StateLayout,
                  tx: optax.GradientTransformation, mesh, rules) -> Callable:
  """key (batch, groups, statistics) -> the train step compiled ahead of time for that batch layout.

  Shardings are explicit and the state is donated, so a step updates it in place. Statistics
  variants take the devices' local gradients as groups where `step.local_groups` allows it.
  """
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  data_parallel = sharding.data_parallel_size(mesh, rules)
  device_groups = step_lib.local_groups(state_layout.shardings["params"], mesh, dict(rules).get("batch"))

  def compile_step(key: controller_lib.StepKey):
    step_fn = jax.jit(
        bound_step(config, state_layout, tx, key, data_parallel, device_groups),
        in_shardings=(state_layout.shardings, batch_sharding, replicated, replicated, replicated),
        out_shardings=(state_layout.shardings, replicated),
        donate_argnums=0)
    arguments = step_arguments(config, state_layout.abstract, key[0], batch_sharding)
    with sharding.tracing(mesh, rules):
      return step_fn.lower(*arguments).compile()

  return compile_step


def branch_from(config: ml_collections.ConfigDict, abstract_state) -> tuple[dict, dict]:
  """State and progress of another run's checkpoint (`train.init_from`, `train.init_step`).

  The branch continues that run's weights, optimizer state, averages, token count and data
  position exactly; its own config decides the batch size and learning rate from there on.
  """
  parent = checkpoint.Checkpoints(config.train.init_from, keep=1_000_000, create=False)
  with contextlib.closing(parent):  # `validation.check_init_from` found the step
    step = config.train.init_step if config.train.init_step >= 0 else parent.latest_step()
    state, progress = parent.restore(step, abstract_state)
  logging.info("branched from %s at step %d (%s tokens)", config.train.init_from, step,
               f"{progress['tokens']:,}")
  return state, {k: progress[k] for k in ("step", "tokens", "seed", "data", "skipped_steps")
                 if k in progress}


def restore(checkpoints: checkpoint.Checkpoints, config: ml_collections.ConfigDict,
            abstract_state) -> tuple[dict, dict] | None:
  """The latest checkpoint's state and progress; None only for a run that never saved one.

  A checkpoint that does not fit the model is the config's problem: one line naming the step, the
  mismatch and the config keys that changed, with the conversion command for the unrolled <->
  scanned layout. `train.restart_if_unrestorable` makes "none restores" a deliberate fresh start.
  """
  try:
    return checkpoints.restore_latest(abstract_state)
  except checkpoint.Incompatible as e:
    raise validation.ConfigError(_incompatible_message(e, checkpoints, config)) from None
  except checkpoint.NoneRestorable as e:
    if not config.train.restart_if_unrestorable:
      raise
    logging.warning("%s: starting over from step 0 (train.restart_if_unrestorable=True)", e)
    return None


def _incompatible_message(error: checkpoint.Incompatible, checkpoints: checkpoint.Checkpoints,
                          config: ml_collections.ConfigDict) -> str:
  try:
    changed = validation.model_data_changes(checkpoints.saved_config(error.step), config)
  except Exception:  # the saved config only explains the mismatch; without it the mismatch stands
    changed = []
  message = str(error) + (f" ({'; '.join(changed[:3])})" if changed else "")
  stored = convert_checkpoint.layout_of(error.stored_keys)
  wanted = "scanned" if config.model.scan_layers else "unrolled"
  if stored and stored != wanted:
    scan = config.model.scan_layers
    message += (f"; convert its {stored} blocks to {wanted} ones with `python -m "
                f"cbs.convert_checkpoint --workdir={checkpoints.directory.parent} "
                f"--scan_layers={scan}` (or resume with model.scan_layers={not scan})")
  return message + "; nothing was changed"


def check_same_data(progress: dict, identity: data_identity.Identity,
                    config: ml_collections.ConfigDict, directory: epath.Path) -> bool:
  """Whether a restored run continues on its own data (True), or deliberately on new data.

  A checkpoint written on other data (files added, removed or resized, another manifest,
  vocabulary or seed) is refused unless `train.allow_data_change`; older checkpoints that
  recorded no identity are taken as they are.
  """
  saved = progress.get("data_identity")
  changed = data_identity.changes(saved, identity) if saved is not None else []
  if not changed:
    return True
  where = f"checkpoint {progress['step']} in {directory}"
  if not config.train.allow_data_change:
    raise validation.ConfigError(
        f"{where} was written on other data ({'; '.join(changed)}); resume on the same data, or "
        "set train.allow_data_change=True to go on with this data from the start of an epoch; "
        "nothing was changed")
  logging.warning("%s was written on other data (%s); train.allow_data_change=True: reading the "
                  "new data from the start of an epoch", where, "; ".join(changed))
  return False


def lock_workdir(workdir: epath.Path, resources: contextlib.ExitStack) -> None:
  """The primary host locks the workdir for this run; every host stops if it is refused."""
  refusal = None
  if jax.process_index() == 0:
    try:
      resources.enter_context(workdir_lock.Lock(workdir).acquire())
    except workdir_lock.WorkdirBusy as e:
      refusal = e
  if jax.process_count() > 1:
    refused = int(np.max(multihost_utils.process_allgather(np.int32(refusal is not None))))
    if refused and refusal is None:
      holder = workdir_lock.live_holder(workdir)
      refusal = workdir_lock.WorkdirBusy(
          f"workdir {workdir} is in use by "
          f"{holder.describe() if holder else 'another run'}; wait for it to end or stop it")
  if refusal is not None:
    raise refusal


def _mark_done(workdir: epath.Path, step: int, tokens: int) -> None:
  """`done.json`: the run reached its end; sweeps skip runs that hold it."""
  (workdir / "done.json").write_text(json.dumps({"step": step, "tokens": tokens}))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after_steps: int | None = None) -> dict:
  """Trains until `config.train_tokens` (or for `stop_after_steps` more steps, then checkpoints).

  Returns the final progress record, with `resumed_from` (the restored step, None for a fresh
  start) and `steps_run` (steps trained by this call). Running again with the same workdir resumes
  from its latest checkpoint; a finished run returns at once. Whatever way it ends, it leaves no
  thread, signal handler, open checkpoint manager or writer behind.
  """
  with contextlib.ExitStack() as resources:
    return _train(config, workdir, stop_after_steps, resources)


def _train(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: int | None,
           resources: contextlib.ExitStack) -> dict:
  """`train_and_evaluate`, whose resources `resources` releases on every way out."""
  # ---- Data -------------------------------------------------------------------------------------
  try:
    data = data_lib.make(config, jax.process_index(), jax.process_count())
  except data_stream.DataError:  # damaged data, named by the error: reported as such
    raise
  except ValueError as e:  # missing files, splits, fields, vocabularies: the user's to fix
    raise validation.ConfigError(str(e)) from None
  resources.callback(data.train.close)
  seq_len = config.data.seq_len
  workdir = epath.Path(workdir)
  validation.check_workdir(config, workdir)
  validation.check_init_from(config, workdir)
  identity = data_identity.of(config)
  workdir.mkdir(parents=True, exist_ok=True)
  lock_workdir(workdir, resources)  # before anything in the workdir is written
  is_main_host = jax.process_index() == 0

  # ---- Mesh and state layout -----------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  tx = optim.make(config.optimizer, models.hidden_lr_scale(config.model))
  state_layout = train_state.state_layout(config, data.vocab_size, tx, mesh, rules)
  lr_at = lr_schedules.make(config.schedule, config.optimizer.lr, config.train_tokens)
  counts = models.param_counts(config.model, data.vocab_size)
  logging.info("mesh %s, parameters %s (non-embedding %s)", dict(mesh.shape), f"{counts['total']:,}",
               f"{counts['non_embedding']:,}")

  # ---- Compiled steps -----------------------------------------------------------------------------
  replicated = sharding.replicated(mesh)
  data_parallel = sharding.data_parallel_size(mesh, rules)
  compile_step = step_compiler(config, state_layout, tx, mesh, rules)
  microbatch = None  # batch.microbatch as configured
  if config.batch.microbatch == layout_lib.AUTO:
    try:
      microbatch = fit.auto_microbatch(config.batch, data_parallel, compile_step)
    except ValueError as e:  # nothing fits: the user's to fix
      raise validation.ConfigError(str(e)) from None
  local_groups = step_lib.local_groups(state_layout.shardings["params"], mesh,
                                       dict(rules).get("batch")) is not None
  controller = controller_lib.Controller(config.batch, data_parallel, compile_step, local_groups,
                                         microbatch)
  resources.callback(controller.close)
  eval_step = sharding.traced_under(mesh, rules, jax.jit(
      functools.partial(step_lib.eval_step, graphdef=state_layout.graphdef),
      in_shardings=(state_layout.shardings["params"], batch_sharding),
      out_shardings=replicated))

  # ---- Init or restore ----------------------------------------------------------------------------
  checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint.keep)
  resources.callback(checkpoints.close)
  restored = restore(checkpoints, config, state_layout.abstract)
  fresh = restored is None
  if fresh and config.train.init_from:
    state, progress = branch_from(config, state_layout.abstract)
    data.train.set_state(progress["data"])
  elif fresh:
    state = train_state.create(config, data.vocab_size, state_layout, mesh, rules)
    progress = {"step": 0, "tokens": 0, "seed": config.seed}
  else:
    state, progress = restored
    if check_same_data(progress, identity, config, checkpoints.directory):
      data.train.set_state(progress["data"])
    controller.set_state(progress["batch"])
    logging.info("resumed from step %d (%s tokens)", progress["step"], f"{progress['tokens']:,}")
  resumed_from = None if fresh else progress["step"]
  if is_main_host:  # a fresh run writes a record at its start step: none in the file is its own
    records.drop_records_after(workdir, progress["step"] - 1 if fresh else progress["step"])
  if progress["tokens"] >= config.train_tokens:
    logging.info("run in %s is already finished (%s tokens); nothing to do", workdir,
                 f"{progress['tokens']:,}")
    if is_main_host and not (workdir / "done.json").exists():  # stopped between the two writes
      _mark_done(workdir, progress["step"], progress["tokens"])
    return {**progress, "resumed_from": resumed_from, "steps_run": 0}

  writer = metrics.make_writer(workdir, is_main_host)
  resources.callback(writer.close)
  config_json = config.to_dict()
  if fresh:
    if is_main_host:
      run_info = {"config": config_json, "params": counts, "floors": data.floors}
      (workdir / "config.json").write_text(json.dumps(run_info, indent=2))
    writer.write_scalars(progress["step"], {"tokens": progress["tokens"],
                                            **{f"floor_{k}": v for k, v in data.floors.items()}})
    writer.write_hparams(metrics.hyperparameters(config))
  if data.floors:
    logging.info("loss floors of the data: %s", "  ".join(
        f"{name} {value:.4f}" for name, value in data.floors.items()))

  # ---- Loop ---------------------------------------------------------------------------------------
  step, tokens = progress["step"], progress["tokens"]
  progress_log = metrics.ProgressLog(config.train_tokens, tokens)
  pending: list[tuple[int, dict]] = []
  peak, peak_source = flops.device_peak_flops(config.model.dtype)
  meter = perf.Meter(tokens, flops.train_flops_per_token(config.model, data.vocab_size, seq_len),
                     peak, mesh.devices.size)
  logging.info("MFU against %s FLOP/s per device (%s)", f"{peak:.3g}", peak_source)
  profile = perf.ProfileWindow(workdir, config.profile.start_tokens, config.profile.steps, tokens)
  resources.callback(profile.stop)
  steps_this_run = 0
  skipped = progress.get("skipped_steps", 0)
  stop_request = resources.enter_context(StopRequest())
  controller.prepare(controller.size)
  while tokens < config.train_tokens:
    waited = time.monotonic()
    batch_size = controller.before_step(step, tokens)
    step_tokens = batch_size * seq_len
    lr_multiplier = controller.lr_multiplier()
    lr = float(lr_at(tokens)) * lr_multiplier
    wd = optim.weight_decay_at(config.optimizer, step_tokens, config.optimizer.lr * lr_multiplier,
                               config.train_tokens)
    statistics = controller.wants_statistics(step + 1)  # the statistics variant only when read
    train_step = controller.step_fn(statistics)
    meter.stalled(time.monotonic() - waited)  # a layout still compiling (start, resume, switch)
    batch = sharding.to_global(data.train.next_batch(batch_size), batch_sharding)
    meter.excluded(profile.before_step(tokens))
    state, step_metrics = train_step(state, batch, np.float32(lr), np.float32(wd),
                                     ewa.taus(config.ewa, step_tokens))
    meter.excluded(profile.after_step(state))
    meter.step()
    tokens_before, tokens = tokens, tokens + step_tokens
    step += 1
    steps_this_run += 1
    record = {"tokens": tokens, "batch_size": batch_size, "lr": lr, "weight_decay": wd,
              "accum_steps": controller.accumulation(batch_size),
              **{k: step_metrics[k] for k in _LOGGED}}
    if statistics:  # the one host read between log points: a decision
      controller.observe(step, tokens, jax.device_get(step_metrics))
      record.update(controller.last_statistics)
    pending.append((step, record))
    done = tokens >= config.train_tokens
    preempted = stop_request.is_set() or checkpoints.reached_preemption(step)
    stopping = done or preempted or steps_this_run == stop_after_steps
    eval_due = eval_schedule.due(config.eval, tokens_before, tokens) or done
    checkpoint_due = _crossed(tokens_before, tokens, config.checkpoint.every_tokens) or stopping
    log_due = step % config.log.every_steps == 0 or stopping or eval_due or checkpoint_due
    checkpoints.check_writes(step, agree=log_due)  # a failed background save stops the run here

    if log_due:
      fetched = jax.device_get(pending)
      performance = meter.read(tokens)
      tokens_per_sec = performance["tokens_per_sec"]
      for s, record in fetched:
        skipped += int(record["nonfinite"])
        figures = performance if s == step else {"tokens_per_sec": tokens_per_sec}
        writer.write_scalars(s, {**record, **figures, "skipped_steps": skipped})
      writer.flush()
      bad = [(s, r["tokens"]) for s, r in fetched if r["nonfinite"]]
      if bad and config.train.on_nonfinite == "stop":
        checkpoints.wait(step)  # the last good checkpoint is complete before the run ends
        latest = checkpoints.latest_step()
        kept = (f"the latest complete checkpoint is step {latest} in {workdir}" if latest is not None
                else f"no checkpoint was written yet in {workdir}")
        raise NonFiniteError(
            f"non-finite loss or gradient at step {bad[0][0]} ({bad[0][1]:,} tokens); {kept} "
            "(set train.on_nonfinite=skip to skip such steps)")
      progress_log.log(step, tokens, float(fetched[-1][1]["loss"]), tokens_per_sec,
                       performance["perf_mfu"])
      pending = []

    if eval_due:
      started = time.monotonic()
      losses = evaluate(eval_step, state, data.eval_batches, batch_sharding, config.ewa)
      meter.evaluating(time.monotonic() - started)
      writer.write_scalars(step, {"tokens": tokens, **losses})
      logging.info("eval at step %d: %s%s", step,
                   "  ".join(f"{k} {v:.4f}" for k, v in losses.items()),
                   metrics.floor_gaps(losses, data.floors))
      if config.train.stop_loss > 0 and min(losses.values()) <= config.train.stop_loss:
        # a CBS run reached its target
        logging.info("eval loss %.4f <= train.stop_loss %.4f: finishing", min(losses.values()),
                     config.train.stop_loss)
        done = stopping = checkpoint_due = True

    if checkpoint_due:
      progress = {"step": step, "tokens": tokens, "seed": config.seed,
                  "data": data.train.get_state(), "data_identity": identity,
                  "batch": controller.get_state(), "skipped_steps": skipped}
      writer.flush()
      checkpoints.save(step, state, progress, config_json)
    if stopping:
      break

  profile.stop(state)
  checkpoints.wait(step)
  progress = {**progress, "resumed_from": resumed_from, "steps_run": steps_this_run}
  if preempted and not done:
    progress["preempted"] = True
    logging.info("stopped by a signal at step %d (%s tokens, %d steps in this process); checkpoint "
                 "complete. Run the same command again to resume.", step, f"{tokens:,}",
                 steps_this_run)
  else:
    logging.info("%s at step %d (%s tokens, %d steps in this process); workdir %s",
                 "finished" if done else "stopped", step, f"{tokens:,}", steps_this_run, workdir)
  if done and is_main_host:
    _mark_done(workdir, step, tokens)
  return progress
