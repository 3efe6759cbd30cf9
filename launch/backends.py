"""Where runs go: this process, local subprocesses, or local GPUs; and the sweep's manifest.

Flag-free, so the sweep, study and probe commands share it. Every backend ends a run the same way
(`outcome`): a failure is recorded in the run's `failed.json` and the manifest, and the others go
on. A run's overrides may be completed just before it starts (`resolve`: the second phase of a CBS
sweep caps a run by the runs finished so far); `on_end` is called after each run (the manifest).
"""

import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable

from etils import epath

from cbs.checkpoint import run_dir
from launch import grid
from launch import outcome

Resolve = Callable[[grid.Run], grid.Run]


class Stopped(Exception):
  """A run here ended neither finished nor failed: SIGTERM / SIGINT asked it to checkpoint and
  return (the run's own handler took the signal), so the sweep stops too instead of starting the
  next run; the same command resumes it."""


def _same(run: grid.Run) -> grid.Run:
  return run


def write_manifest(
  root: epath.Path, sweep_path: str, runs: list[grid.Run], extra: dict | None = None
) -> None:
  """`ROOT/manifest.json`: every run with its overrides, workdir, status (and why it failed)."""
  entries = []
  for r in runs:
    workdir = root / r.name
    entry = {
      "name": r.name,
      "workdir": str(workdir),
      "config": r.config,
      "overrides": r.overrides,
      "status": outcome.status(workdir),
    }
    if entry["status"] == "failed":
      entry["reason"] = outcome.failure(workdir).get("reason", "")
    entries.append(entry)
  root.mkdir(parents=True, exist_ok=True)
  (root / run_dir.MANIFEST).write_text(
    json.dumps({"sweep": sweep_path, **(extra or {}), "runs": entries}, indent=2)
  )


def python_command(run: grid.Run, workdir: epath.Path, python: str = sys.executable) -> list[str]:
  return [python, *run.args(str(workdir))]


def report(run: grid.Run, root: epath.Path, progress=print) -> str:
  """Prints how a run ended unless it finished, and returns its status."""
  status = outcome.status(root / run.name)
  if status == "failed":
    progress(f"run {run.name} failed: {outcome.failure(root / run.name)['reason']}")
  elif status == "started":
    progress(f"run {run.name} stopped before its end (preempted?); rerun to resume it")
  return status


def run_local(
  runs: list[grid.Run],
  root: epath.Path,
  dry_run: bool = False,
  resolve: Resolve = _same,
  on_end: Callable[[], None] = lambda: None,
) -> None:
  """One after another, each in its own process."""
  for i, r in enumerate(runs, 1):
    command = python_command(resolve(r), root / r.name)
    print(f"[{i}/{len(runs)}] {shlex.join(command)}", flush=True)
    if not dry_run:
      outcome.attempt(command, root / r.name)
      report(r, root)
      on_end()


def validate(runs: list[grid.Run]) -> None:
  """Every run's config validated as the run will validate it (this host's devices), before any
  starts; ValueError naming the run and the bad value."""
  import jax  # noqa: PLC0415  (the other backends never load JAX in the launcher)

  from cbs.config import validation  # noqa: PLC0415

  for r in runs:
    try:
      validation.validate(
        grid.load_config(r.config, r.overrides), jax.device_count(), jax.process_count()
      )
    except (ValueError, validation.ConfigError) as e:
      raise ValueError(f"run {r.name}: {e}") from None


def run_inprocess(
  runs: list[grid.Run],
  root: epath.Path,
  dry_run: bool = False,
  progress=print,
  resolve: Resolve = _same,
  on_end: Callable[[], None] = lambda: None,
) -> dict[str, str]:
  """Trains each run here in turn; returns {name: status}.

  Every config is built and validated before the first run starts, so a typo in the sweep fails in
  one line at once; a run that diverges or crashes is recorded as failed and the sweep goes on. A
  run stopped by SIGTERM / SIGINT (checkpointed, not finished) raises `Stopped`.
  """
  import jax  # noqa: PLC0415  (the other backends never load JAX in the launcher)

  validate(runs)
  from cbs import train  # noqa: PLC0415

  statuses = {}
  for i, r in enumerate(runs, 1):
    progress(f"[{i}/{len(runs)}] {r.name}")
    if dry_run:
      continue
    config = grid.load_config(r.config, resolve(r).overrides)
    if config.compile_cache_dir:
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compile_cache_dir))
    try:
      train.train_and_evaluate(config, str(root / r.name))
    except Exception as e:
      outcome.record_failure(root / r.name, f"{type(e).__name__}: {e}", 1)
    statuses[r.name] = report(r, root, progress)
    on_end()
    if not outcome.is_settled(root / r.name):
      raise Stopped(
        f"run {r.name} was stopped (SIGTERM or SIGINT) after its checkpoint; "
        f"{len(runs) - i} run(s) not started: the same command resumes"
      )
  return statuses


def run_gpus(
  runs: list[grid.Run],
  root: epath.Path,
  dry_run: bool = False,
  num_gpus: int = 0,
  gpus_per_run: int = 1,
  resolve: Resolve = _same,
  on_end: Callable[[], None] = lambda: None,
) -> None:
  """Runs in parallel, one per group of `gpus_per_run` local GPUs (CUDA_VISIBLE_DEVICES)."""
  total = num_gpus or len(
    subprocess.run(
      ["nvidia-smi", "-L"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
  )
  slots = [
    ",".join(str(g) for g in range(s, s + gpus_per_run))
    for s in range(0, total - gpus_per_run + 1, gpus_per_run)
  ]
  if not slots:
    raise ValueError(f"--gpus_per_run={gpus_per_run} exceeds the {total} GPUs")
  free = list(slots)
  lock = threading.Lock()

  def launch(run):
    with lock:  # resolved when a slot is free: it sees every run finished before it
      devices = free.pop()
      command = python_command(resolve(run), root / run.name)
      print(f"CUDA_VISIBLE_DEVICES={devices} {shlex.join(command)}", flush=True)
    try:
      if not dry_run:
        outcome.attempt(
          command, root / run.name, env={**os.environ, "CUDA_VISIBLE_DEVICES": devices}
        )
        with lock:
          report(run, root)
          on_end()
    finally:
      with lock:
        free.append(devices)

  with concurrent.futures.ThreadPoolExecutor(len(slots)) as pool:
    for future in [pool.submit(launch, r) for r in runs]:
      future.result()


# The backends that run here and wait for their runs: name -> runner(runs, root, ...).
WAITING: dict[str, Callable[..., object]] = {
  "local": run_local,
  "inprocess": run_inprocess,
  "gpus": run_gpus,
}
