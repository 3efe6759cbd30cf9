"""The remote backends of `launch.sweep`: each run on all workers of a TPU VM through `gcloud ...
ssh --worker=all` (after a setup step that installs the project there), or a Slurm sbatch array
whose tasks start multi-node runs with `srun` (jax.distributed reads Slurm's layout). Every remote
run records its own failure in its workdir (`python -m launch.outcome`). These build, print and
start the commands; they read no flags (`launch.sweep` passes their values).
"""

import shlex
import subprocess
import sys
from typing import NamedTuple

from etils import epath

from cbs.config import overrides as config_overrides
from launch import backends
from launch import grid


class TpuVm(NamedTuple):
  name: str
  zone: str
  repo: str  # the repository each worker installs


class SlurmJob(NamedTuple):
  nodes: int  # nodes per run
  options: str  # extra #SBATCH options, e.g. '--time=24:00:00'


def recorded(command: list[str], workdir: epath.Path, python: str) -> list[str]:
  """A remote run's command, wrapped so that it records its own failure in its workdir."""
  return [
    python,
    "-m",
    "launch.outcome",
    f"--workdir={workdir}",
    "--",
    python,
    *command[1:],
    *config_overrides.to_flags({"mesh.distributed": True}),
  ]


def run_tpu(
  runs: list[grid.Run],
  root: epath.Path,
  resolve: backends.Resolve,
  on_end,
  vm: TpuVm,
  dry_run: bool,
) -> None:
  """The setup step, then each run in turn on every worker of `vm` (printed only, `dry_run`)."""
  ssh = [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    vm.name,
    f"--zone={vm.zone}",
    "--worker=all",
    "--command",
  ]
  setup = (
    f"test -d cbs || git clone {vm.repo} cbs; cd cbs && python3 -m venv .venv && "
    ".venv/bin/pip install -q -e . 'jax[tpu]'"
  )
  steps = [(None, ssh + [setup])] + [(r, None) for r in runs]
  for i, (run, command) in enumerate(steps):
    if run:
      inner = recorded(
        backends.python_command(resolve(run), root / run.name), root / run.name, ".venv/bin/python"
      )
      command = ssh + ["cd cbs && " + shlex.join(inner)]
    print(f"[{i}/{len(runs)}] {shlex.join(command)}", flush=True)
    if not dry_run:
      subprocess.run(command, check=run is None)
      if run:
        backends.report(run, root)
        on_end()


def slurm_script(commands: list[list[str]], root: epath.Path, job: SlurmJob) -> str:
  lines = "\n".join(shlex.join(c) for c in commands)
  options = "".join(f"#SBATCH {o}\n" for o in shlex.split(job.options))
  return (
    f"#!/bin/bash\n#SBATCH --array=0-{len(commands) - 1}\n#SBATCH --nodes={job.nodes}\n"
    f"#SBATCH --ntasks-per-node=1\n#SBATCH --output={root}/slurm-%A_%a.out\n{options}"
    f"mapfile -t RUNS <<'CBS_RUNS'\n{lines}\nCBS_RUNS\n"
    'srun bash -c "${RUNS[$SLURM_ARRAY_TASK_ID]}"\n'
  )


def run_slurm(
  runs: list[grid.Run],
  root: epath.Path,
  resolve: backends.Resolve,
  name: str,
  job: SlurmJob,
  dry_run: bool,
) -> None:
  """Writes the sbatch array ROOT/`name`, prints it and submits it (not when `dry_run`)."""
  commands = [
    recorded(backends.python_command(resolve(r), root / r.name), root / r.name, sys.executable)
    for r in runs
  ]
  script = slurm_script(commands, root, job)
  (root / name).write_text(script)
  print(script, flush=True)
  if not dry_run:
    subprocess.run(["sbatch", str(root / name)], check=True)
