"""A run's two ends: what a fresh run writes first, and how any run ends.

At the start of a new run: `config.json` (the resolved config, parameter counts, the data's loss
floors), the first metrics record and the hyperparameters. At the end: the line saying how the run
ended, `done.json` once it reached its tokens (sweeps skip runs that hold it), and the result of
`train_and_evaluate`. Must not train, save or evaluate: the loop (`cbs.train`) does.
"""

import json

from cbs import quiet_tensorflow  # noqa: F401  (before clu, which imports TensorFlow)

# isort: split
from absl import logging
from clu import metric_writers
from etils import epath

from cbs.checkpoint import run_dir
from cbs.metrics import writers as metrics
from cbs.run import resume
from cbs.run import setup as run_setup
from cbs.run.progress import Progress
from cbs.run.stopping import StopReason


def write_run_start(
  run: run_setup.RunSetup, start: resume.Start, writer: metric_writers.MetricWriter
) -> None:
  """A new run's `config.json`, first record and hyperparameters; the data's loss floors."""
  floors = run.data.floors
  if start.resumed_from is None:
    if run.is_main_host:
      info = run_dir.RunInfo(run.config.to_dict(), run.param_counts, floors)
      run_dir.write_run_info(run.workdir, info)
    writer.write_scalars(
      start.progress.step,
      {"tokens": start.progress.tokens, **{f"floor_{k}": v for k, v in floors.items()}},
    )
    writer.write_hparams(metrics.hyperparameters(run.config))
  if floors:
    logging.info(
      "loss floors of the data: %s",
      "  ".join(f"{name} {value:.4f}" for name, value in floors.items()),
    )


def already_finished(run: run_setup.RunSetup, start: resume.Start) -> dict:
  """A run resumed past its tokens trains nothing; its `done.json` is written if it was missed."""
  progress = start.progress
  logging.info(
    "run in %s is already finished (%s tokens); nothing to do", run.workdir, f"{progress.tokens:,}"
  )
  if run.is_main_host and not (run.workdir / run_dir.DONE).exists():  # stopped between two writes
    mark_done(run.workdir, progress.step, progress.tokens)
  return {**progress.as_dict(), "resumed_from": start.resumed_from, "steps_run": 0}


def finish(
  run: run_setup.RunSetup,
  start: resume.Start,
  progress: Progress,
  reason: StopReason,
  steps_run: int,
) -> dict:
  """Says how the run ended; a finished run gets `done.json`. The result of `train_and_evaluate`."""
  step, tokens = progress.step, progress.tokens
  result = {**progress.as_dict(), "resumed_from": start.resumed_from, "steps_run": steps_run}
  if reason is StopReason.PREEMPTED:
    result["preempted"] = True
    logging.info(
      "stopped by a signal at step %d (%s tokens, %d steps in this process); "
      "checkpoint complete. Run the same command again to resume.",
      step,
      f"{tokens:,}",
      steps_run,
    )
  else:
    logging.info(
      "%s at step %d (%s tokens, %d steps in this process); workdir %s",
      "finished" if reason.finished else "stopped",
      step,
      f"{tokens:,}",
      steps_run,
      run.workdir,
    )
  if reason.finished and run.is_main_host:
    mark_done(run.workdir, step, tokens)
  return result


def mark_done(workdir: epath.Path, step: int, tokens: int) -> None:
  """`done.json`: the run reached its end; sweeps skip runs that hold it."""
  (workdir / run_dir.DONE).write_text(json.dumps({"step": step, "tokens": tokens}))
