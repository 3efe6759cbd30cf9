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

import os
import shlex
import subprocess
import sys

from absl import app
from absl import flags
from etils import epath

from launch import backends
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
  backends.run_local(steps, dry_run)


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
  backends.write_manifest(root, _SWEEP.value, runs)
  todo = [r for r in runs if not backends.is_finished(root / r.name)]
  print(f"{len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run "
        f"(manifest: {root / 'manifest.json'})", flush=True)
  if not todo:
    return
  commands = [backends.python_command(r, root / r.name) for r in todo]
  if _BACKEND.value == "local":
    backends.run_local(commands, _DRY_RUN.value)
  elif _BACKEND.value == "inprocess":
    try:
      backends.run_inprocess(todo, root, _DRY_RUN.value)
    except ValueError as e:
      print(f"launch.sweep: {e}", file=sys.stderr)
      sys.exit(2)
  elif _BACKEND.value == "gpus":
    try:
      backends.run_gpus(commands, _DRY_RUN.value, _NUM_GPUS.value, _GPUS_PER_RUN.value)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  elif _BACKEND.value == "tpu":
    run_tpu(commands, _DRY_RUN.value)
  else:
    script = slurm_script(commands, root)
    (root / "sweep.sbatch").write_text(script)
    print(script, flush=True)
    if not _DRY_RUN.value:
      subprocess.run(["sbatch", str(root / "sweep.sbatch")], check=True)
  backends.write_manifest(root, _SWEEP.value, runs)


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep", "root"])
  app.run(main)
