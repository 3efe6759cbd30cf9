"""The training loop: wires data, mesh, state, compiled steps, metrics and checkpoints together.

Plain Python around two compiled pure functions. The host owns the counters (step, tokens, data
position) and computes the learning rate and EWA decays from the token count, so the device never
waits on the host and the host reads device values only at logging, eval and checkpoint points.
"""

import functools
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from cbs import checkpoint
from cbs import data as data_lib
from cbs import ewa
from cbs import metrics
from cbs import models
from cbs import optim
from cbs import schedules
from cbs import sharding
from cbs import step as step_lib
from cbs import train_state
from cbs import validation


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after_steps: int | None = None) -> dict:
  """Trains until `config.train_tokens` (or for `stop_after_steps` more steps, then checkpoints).

  Returns the final progress record. Running again with the same workdir resumes from its latest
  checkpoint; a finished run returns at once.
  """
  # ---- Data -------------------------------------------------------------------------------------
  try:
    data = data_lib.make(config, jax.process_index(), jax.process_count())
  except ValueError as e:  # missing files, splits, fields, vocabularies: the user's to fix
    raise validation.ConfigError(str(e)) from None
  seq_len = config.data.seq_len
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_main_host = jax.process_index() == 0

  # ---- Mesh and state layout ----------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  tx = optim.make(config.optimizer)
  layout = train_state.layout(config, data.vocab_size, tx, mesh, rules)
  lr_at = schedules.make(config.schedule, config.optimizer.lr, config.train_tokens)
  counts = models.param_counts(config.model, data.vocab_size)
  logging.info("mesh %s, parameters %s (non-embedding %s)", dict(mesh.shape), f"{counts['total']:,}",
               f"{counts['non_embedding']:,}")

  # ---- Compiled steps -----------------------------------------------------------------------------
  replicated = sharding.replicated(mesh)
  train_step = jax.jit(
      functools.partial(step_lib.train_step, graphdef=layout.graphdef, tx=tx),
      in_shardings=(layout.shardings, batch_sharding, replicated, replicated),
      out_shardings=(layout.shardings, replicated),
      donate_argnums=0)
  eval_step = jax.jit(
      functools.partial(step_lib.eval_step, graphdef=layout.graphdef),
      in_shardings=(layout.shardings["params"], batch_sharding),
      out_shardings=replicated)

  # ---- Init or restore ----------------------------------------------------------------------------
  checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint.keep)
  latest = checkpoints.latest_step()
  if latest is None:
    state = train_state.create(config, data.vocab_size, layout, mesh, rules)
    progress = {"step": 0, "tokens": 0, "seed": config.seed}
    metrics.drop_records_after(workdir, 0)
  else:
    state, progress = checkpoints.restore(latest, layout.abstract)
    data.train.set_state(progress["data"])
    metrics.drop_records_after(workdir, progress["step"])
    logging.info("resumed from step %d (%s tokens)", progress["step"], f"{progress['tokens']:,}")
  if progress["tokens"] >= config.train_tokens:
    logging.info("run in %s is already finished (%s tokens); nothing to do", workdir,
                 f"{progress['tokens']:,}")
    checkpoints.close()
    return progress

  writer = metrics.make_writer(workdir, is_main_host)
  config_json = config.to_dict()
  if progress["step"] == 0:
    if is_main_host:
      run_info = {"config": config_json, "params": counts, "floors": data.floors}
      (workdir / "config.json").write_text(json.dumps(run_info, indent=2))
    writer.write_scalars(0, {"tokens": 0, **{f"floor_{k}": v for k, v in data.floors.items()}})

  # ---- Loop ---------------------------------------------------------------------------------------
  step, tokens = progress["step"], progress["tokens"]
  progress_log = metrics.Progress(config.train_tokens, tokens)
  pending: list[tuple[int, dict]] = []
  last_log_time, last_log_tokens = time.monotonic(), tokens
  steps_this_run = 0
  while tokens < config.train_tokens:
    batch_size = config.batch.size
    step_tokens = batch_size * seq_len
    lr = float(lr_at(tokens))
    batch = sharding.to_global(data.train.next_batch(batch_size), batch_sharding)
    state, step_metrics = train_step(state, batch, jnp.float32(lr),
                                     ewa.taus(config.ewa, step_tokens))
    tokens_before, tokens = tokens, tokens + step_tokens
    step += 1
    steps_this_run += 1
    pending.append((step, {"tokens": tokens, "batch_size": batch_size, "lr": lr, **step_metrics}))
    done = tokens >= config.train_tokens
    stopping = done or steps_this_run == stop_after_steps

    if step % config.log.every_steps == 0 or stopping:
      fetched = jax.device_get(pending)
      now = time.monotonic()
      tokens_per_sec = (tokens - last_log_tokens) / max(now - last_log_time, 1e-9)
      for s, record in fetched:
        writer.write_scalars(s, {**record, "tokens_per_sec": tokens_per_sec})
      progress_log.log(step, tokens, float(fetched[-1][1]["loss"]), tokens_per_sec)
      pending, last_log_time, last_log_tokens = [], now, tokens

    if _crossed(tokens_before, tokens, config.eval.every_tokens) or done:
      losses = evaluate(eval_step, state, data.eval_batches, batch_sharding, config.ewa)
      writer.write_scalars(step, {"tokens": tokens, **losses})
      logging.info("eval at step %d: %s", step,
                   "  ".join(f"{k} {v:.4f}" for k, v in losses.items()))

    if _crossed(tokens_before, tokens, config.checkpoint.every_tokens) or stopping:
      progress = {"step": step, "tokens": tokens, "seed": config.seed,
                  "data": data.train.get_state()}
      writer.flush()
      checkpoints.save(step, state, progress, config_json)
    if stopping:
      break

  checkpoints.wait()
  checkpoints.close()
  writer.flush()
  writer.close()
  logging.info("%s at step %d (%s tokens); workdir %s",
               "finished" if tokens >= config.train_tokens else "stopped", step, f"{tokens:,}", workdir)
  return progress
