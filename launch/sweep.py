"""Runs a sweep: `python -m launch.sweep --sweep=FILE --root=DIR --backend=local|gpus|tpu|slurm`.

Expands the grid of the sweep file (see `grid.py`) into `DIR/<run name>` workdirs, writes
`DIR/manifest.json` (every run with its overrides, workdir and status; the analysis reads it), skips
finished runs (their workdir holds `done.json`) and starts the rest, which resume from their own
checkpoints. `--dry_run` prints the exact commands or scripts and runs nothing.

Backends: `local` runs one after another here, each in its own process; `inprocess` runs them one
after another inside this process (no per-run interpreter start and imports: small CPU runs); `gpus` runs one per local GPU in parallel
(`CUDA_VISIBLE_DEVICES`); `tpu` runs each on all workers of a TPU VM through `gcloud ... ssh
--worker=all` after a setup step that installs the project there; `slurm` writes and submits an
sbatch array whose tasks start multi-node runs with `srun` (jax.distributed reads Slurm's layout).
"""

import concurrent.futures
import json
import os
import shlex
import subprocess
import sys

from absl import app
from absl import flags
from etils import epath

from launch import grid

BACKENDS = ("local", "inprocess", "gpus", "tpu", "slurm")
_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (Python with get_sweep()).")
_ROOT = flags.DEFINE_string("root", None, "Directory holding one workdir per run and the manifest.")
_BACKEND = flags.DEFINE_enum("backend", "local", BACKENDS, "Where the runs go.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands or scripts; run nothing.")
_NUM_GPUS = flags.DEFINE_integer("num_gpus", 0, "gpus: GPUs to use (0 = count them with nvidia-smi).")
_GPUS_PER_RUN = flags.DEFINE_integer("gpus_per_run", 1, "gpus: GPUs given to each run.")
_TPU = flags.DEFINE_string("tpu", "", "tpu: TPU VM name.")
_ZONE = flags.DEFINE_string("zone", "", "tpu: its zone.")
_REPO = flags.DEFINE_string("repo", "https://github.com/OWNER/cbs.git", "tpu: repository to install.")
_NODES = flags.DEFINE_integer("nodes", 1, "slurm: nodes per run.")
_SLURM_ARGS = flags.DEFINE_string("slurm_args", "", "slurm: extra #SBATCH options, e.g. '--time=24:00:00'.")


def is_finished(workdir: epath.Path) -> bool:
  return (workdir / "done.json").exists()


def write_manifest(root: epath.Path, sweep_path: str, runs: list[grid.Run]) -> None:
  entries = [{"name": r.name, "workdir": str(root / r.name), "config": r.config,
              "overrides": r.overrides,
              "status": "finished" if is_finished(root / r.name) else "pending"} for r in runs]
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
      progress(f"run {r.name} failed: {e}")
  return status


def run_gpus(commands: list[list[str]], dry_run: bool) -> None:
  total = _NUM_GPUS.value or len(subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                                text=True, check=True).stdout.splitlines())
  slots = [",".join(str(g) for g in range(s, s + _GPUS_PER_RUN.value))
           for s in range(0, total - _GPUS_PER_RUN.value + 1, _GPUS_PER_RUN.value)]
  if not slots:
    raise app.UsageError(f"--gpus_per_run={_GPUS_PER_RUN.value} exceeds the {total} GPUs")
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


def run_tpu(commands: list[list[str]], dry_run: bool) -> None:
  if not (_TPU.value and _ZONE.value):
    raise app.UsageError("--backend=tpu needs --tpu and --zone")
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", _TPU.value, f"--zone={_ZONE.value}",
         "--worker=all", "--command"]
  setup = (f"test -d cbs || git clone {_REPO.value} cbs; cd cbs && python3 -m venv .venv && "
           ".venv/bin/pip install -q -e . 'jax[tpu]'")
  steps = [ssh + [setup]] + [
      ssh + ["cd cbs && " + shlex.join([".venv/bin/python", *c[1:],
                                        "--config.mesh.distributed=True"])] for c in commands]
  run_local(steps, dry_run)


def slurm_script(commands: list[list[str]], root: epath.Path) -> str:
  lines = "\n".join(shlex.join([*c, "--config.mesh.distributed=True"]) for c in commands)
  options = "".join(f"#SBATCH {o}\n" for o in shlex.split(_SLURM_ARGS.value))
  return (f"#!/bin/bash\n#SBATCH --array=0-{len(commands) - 1}\n#SBATCH --nodes={_NODES.value}\n"
          f"#SBATCH --ntasks-per-node=1\n#SBATCH --output={root}/slurm-%A_%a.out\n{options}"
          f"mapfile -t RUNS <<'CBS_RUNS'\n{lines}\nCBS_RUNS\n"
          "srun bash -c \"${RUNS[$SLURM_ARRAY_TASK_ID]}\"\n")


def main(argv: list[str]) -> None:
  del argv
  root = epath.Path(_ROOT.value if "://" in _ROOT.value else os.path.abspath(_ROOT.value))
  try:
    runs = grid.expand(grid.load(_SWEEP.value))
  except ValueError as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    sys.exit(2)
  write_manifest(root, _SWEEP.value, runs)
  todo = [r for r in runs if not is_finished(root / r.name)]
  print(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run "
        f"(manifest: {root / 'manifest.json'})", flush=True)
  if not todo:
    return
  commands = [python_command(r, root / r.name) for r in todo]
  if _BACKEND.value == "local":
    run_local(commands, _DRY_RUN.value)
  elif _BACKEND.value == "inprocess":
    try:
      run_inprocess(todo, root, _DRY_RUN.value)
    except ValueError as e:
      print(f"launch.sweep: {e}", file=sys.stderr)
      sys.exit(2)
  elif _BACKEND.value == "gpus":
    run_gpus(commands, _DRY_RUN.value)
  elif _BACKEND.value == "tpu":
    run_tpu(commands, _DRY_RUN.value)
  else:
    script = slurm_script(commands, root)
    (root / "sweep.sbatch").write_text(script)
    print(script, flush=True)
    if not _DRY_RUN.value:
      subprocess.run(["sbatch", str(root / "sweep.sbatch")], check=True)
  write_manifest(root, _SWEEP.value, runs)


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep", "root"])
  app.run(main)
