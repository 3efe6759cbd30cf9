"""Where runs go: this process, local subprocesses, or local GPUs; and the sweep's manifest.

Flag-free, so the sweep, study and probe commands share it. A run's workdir is finished when it
holds `done.json` (or `failed.json`: a diverged run that a rerun would repeat); both are skipped.
"""

import concurrent.futures
import json
import os
import shlex
import subprocess
import sys

from etils import epath

from launch import grid


def is_finished(workdir: epath.Path) -> bool:
  """Finished, or failed in a way a rerun would repeat (a diverged run): either way, skipped."""
  return (workdir / "done.json").exists() or (workdir / "failed.json").exists()


def _status(workdir: epath.Path) -> str:
  if (workdir / "failed.json").exists():
    return "failed"
  return "finished" if (workdir / "done.json").exists() else "pending"


def write_manifest(root: epath.Path, sweep_path: str, runs: list[grid.Run]) -> None:
  entries = [{"name": r.name, "workdir": str(root / r.name), "config": r.config,
              "overrides": r.overrides,
              "status": _status(root / r.name)} for r in runs]
  root.mkdir(parents=True, exist_ok=True)
  (root / "manifest.json").write_text(json.dumps({"sweep": sweep_path, "runs": entries}, indent=2))


def python_command(run: grid.Run, workdir: epath.Path, python: str = sys.executable) -> list[str]:
  return [python, *run.args(str(workdir))]


def run_local(commands: list[list[str]], dry_run: bool) -> None:
  for i, command in enumerate(commands, 1):
    print(f"[{i}/{len(commands)}] {shlex.join(command)}", flush=True)
    if not dry_run:
      subprocess.run(command, check=True)


def run_inprocess(runs: list[grid.Run], root: epath.Path, dry_run: bool = False,
                  progress=print) -> dict[str, str]:
  """Trains each run here in turn; returns {name: finished | failed: why}.

  Every config is built and validated before the first run starts, so a typo in the sweep fails in
  one line at once; a run that diverges is recorded as failed and the sweep goes on.
  """
  import jax  # noqa: PLC0415  (the other backends never load JAX in the launcher)

  from cbs import validation  # noqa: PLC0415

  configs = []
  for r in runs:
    try:
      config = grid.load_config(r.config, r.overrides)
      validation.validate(config, jax.device_count(), jax.process_count())
    except (ValueError, validation.ConfigError) as e:
      raise ValueError(f"run {r.name}: {e}") from None
    configs.append(config)
  from cbs import train  # noqa: PLC0415

  status = {}
  for i, (r, config) in enumerate(zip(runs, configs), 1):
    progress(f"[{i}/{len(runs)}] {r.name}")
    if dry_run:
      continue
    if config.compile_cache_dir:
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compile_cache_dir))
    try:
      train.train_and_evaluate(config, str(root / r.name))
      status[r.name] = "finished"
    except train.NonFiniteError as e:
      status[r.name] = f"failed: {e}"
      (root / r.name / "failed.json").write_text(json.dumps({"error": str(e)}))
      progress(f"run {r.name} failed: {e}")
  return status


def run_gpus(commands: list[list[str]], dry_run: bool, num_gpus: int = 0,
             gpus_per_run: int = 1) -> None:
  """Runs in parallel, one per group of `gpus_per_run` local GPUs (CUDA_VISIBLE_DEVICES)."""
  total = num_gpus or len(subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                         text=True, check=True).stdout.splitlines())
  slots = [",".join(str(g) for g in range(s, s + gpus_per_run))
           for s in range(0, total - gpus_per_run + 1, gpus_per_run)]
  if not slots:
    raise ValueError(f"--gpus_per_run={gpus_per_run} exceeds the {total} GPUs")
  free = list(slots)

  def launch(command):
    devices = free.pop()
    try:
      print(f"CUDA_VISIBLE_DEVICES={devices} {shlex.join(command)}", flush=True)
      if not dry_run:
        subprocess.run(command, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": devices})
    finally:
      free.append(devices)

  with concurrent.futures.ThreadPoolExecutor(len(slots)) as pool:
    for future in [pool.submit(launch, c) for c in commands]:
      future.result()
