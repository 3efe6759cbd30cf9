"""Runs a sweep: `python -m launch.sweep --sweep=FILE --root=DIR --backend=local|gpus|tpu|slurm`.

Expands the grid of the sweep file (see `grid.py`) into `DIR/<run name>` workdirs, writes
`DIR/manifest.json` (every run with its overrides, workdir, status and why it failed; the analysis
reads it), skips finished and failed runs (`--retry_failed` retries the failed ones) and starts the
rest, which resume from their own checkpoints (a preempted run goes on where it stopped). A run that
fails (diverges, crashes, runs out of memory, exits non-zero) is recorded in its `failed.json` with
the last line of its error, and the sweep goes on. `--dry_run` prints the exact commands or scripts
and runs nothing; `--status` prints every run's status, tokens and last loss from the run
directories.

A sweep file with a `two_phase` section is a CBS measurement (`two_phase.py`): the reference batch
runs first; once it has finished the target is known and the other batches run to it. One command
drives both phases: backends that wait for their runs (local, inprocess, gpus, tpu) go straight on;
with slurm, run the same command again once the phase-1 jobs have ended.

Backends: `local` runs one after another here, each in its own process; `inprocess` runs them one
after another inside this process (no per-run interpreter start and imports: small CPU runs); `gpus`
runs one per local GPU in parallel (`CUDA_VISIBLE_DEVICES`); `tpu` runs each on all workers of a TPU
VM through `gcloud ... ssh --worker=all` after a setup step that installs the project there; `slurm`
writes and submits an sbatch array whose tasks start multi-node runs with `srun` (jax.distributed
reads Slurm's layout). Remote runs record their own failures (`python -m launch.outcome`).
"""

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable

from absl import app
from absl import flags
from etils import epath

from cbs import object_store
from cbs.checkpoint import workdir_lock
from cbs.config import overrides as config_overrides
from launch import backends
from launch import grid
from launch import outcome
from launch import status_table
from launch import two_phase

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file (Python with get_sweep()).")
_ROOT = flags.DEFINE_string("root", None, "Directory holding one workdir per run and the manifest.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands or scripts; run nothing.")
_STATUS = flags.DEFINE_bool(
  "status", False, "Print each run's status, tokens and last loss; run nothing."
)
_RETRY_FAILED = flags.DEFINE_bool(
  "retry_failed", False, "Run failed runs again (from their last checkpoint)."
)
_NUM_GPUS = flags.DEFINE_integer(
  "num_gpus", 0, "gpus: GPUs to use (0 = count them with nvidia-smi)."
)
_GPUS_PER_RUN = flags.DEFINE_integer("gpus_per_run", 1, "gpus: GPUs given to each run.")
_TPU = flags.DEFINE_string("tpu", "", "tpu: TPU VM name.")
_ZONE = flags.DEFINE_string("zone", "", "tpu: its zone.")
_REPO = flags.DEFINE_string(
  "repo", "https://github.com/OWNER/cbs.git", "tpu: repository to install."
)
_NODES = flags.DEFINE_integer("nodes", 1, "slurm: nodes per run.")
_SLURM_ARGS = flags.DEFINE_string(
  "slurm_args", "", "slurm: extra #SBATCH options, e.g. '--time=24:00:00'."
)


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


def run_tpu(runs: list[grid.Run], root: epath.Path, resolve: backends.Resolve, on_end) -> None:
  if not (_TPU.value and _ZONE.value):
    raise app.UsageError("--backend=tpu needs --tpu and --zone")
  ssh = [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    _TPU.value,
    f"--zone={_ZONE.value}",
    "--worker=all",
    "--command",
  ]
  setup = (
    f"test -d cbs || git clone {_REPO.value} cbs; cd cbs && python3 -m venv .venv && "
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
    if not _DRY_RUN.value:
      subprocess.run(command, check=run is None)
      if run:
        backends.report(run, root)
        on_end()


def slurm_script(commands: list[list[str]], root: epath.Path) -> str:
  lines = "\n".join(shlex.join(c) for c in commands)
  options = "".join(f"#SBATCH {o}\n" for o in shlex.split(_SLURM_ARGS.value))
  return (
    f"#!/bin/bash\n#SBATCH --array=0-{len(commands) - 1}\n#SBATCH --nodes={_NODES.value}\n"
    f"#SBATCH --ntasks-per-node=1\n#SBATCH --output={root}/slurm-%A_%a.out\n{options}"
    f"mapfile -t RUNS <<'CBS_RUNS'\n{lines}\nCBS_RUNS\n"
    'srun bash -c "${RUNS[$SLURM_ARRAY_TASK_ID]}"\n'
  )


def run_slurm(runs: list[grid.Run], root: epath.Path, resolve: backends.Resolve, name: str) -> None:
  commands = [
    recorded(backends.python_command(resolve(r), root / r.name), root / r.name, sys.executable)
    for r in runs
  ]
  script = slurm_script(commands, root)
  (root / name).write_text(script)
  print(script, flush=True)
  if not _DRY_RUN.value:
    subprocess.run(["sbatch", str(root / name)], check=True)


def launch(
  runs: list[grid.Run], root: epath.Path, label: str, script: str, resolve: backends.Resolve, on_end
) -> None:
  """Starts the runs of one phase that are neither finished nor failed, on the chosen backend.

  `script` names the sbatch file of the slurm backend; `on_end` runs after each run has ended.
  """
  statuses = [outcome.status(root / r.name) for r in runs]
  skipped = ("finished",) if _RETRY_FAILED.value else ("finished", "failed")
  todo = [r for r, s in zip(runs, statuses) if s not in skipped]
  elsewhere = running_elsewhere(todo, root)
  todo = [r for r in todo if r.name not in elsewhere]
  print(
    f"{label}{len(runs)} runs, {statuses.count('finished')} finished, "
    f"{statuses.count('failed')} failed, "
    f"{f'{len(elsewhere)} running elsewhere, ' if elsewhere else ''}{len(todo)} to run "
    f"(manifest: {root / 'manifest.json'})",
    flush=True,
  )
  for name, holder in elsewhere.items():
    print(f"  {name}: running elsewhere ({holder.describe()})", flush=True)
  if not todo:
    return
  if not _DRY_RUN.value:
    for r in todo:
      outcome.clear_failure(root / r.name)
  BACKENDS[_BACKEND.value](todo, root, resolve, on_end, script)


def running_elsewhere(runs: list[grid.Run], root: epath.Path) -> dict[str, workdir_lock.Holder]:
  """The runs whose workdir a live run holds (an earlier launch still going): not started again."""
  holders = {r.name: workdir_lock.live_holder(root / r.name) for r in runs}
  return {name: holder for name, holder in holders.items() if holder is not None}


def _local(runs, root, resolve, on_end, script) -> None:
  del script
  backends.run_local(runs, root, _DRY_RUN.value, resolve, on_end)


def _inprocess(runs, root, resolve, on_end, script) -> None:
  del script
  backends.run_inprocess(runs, root, _DRY_RUN.value, resolve=resolve, on_end=on_end)


def _gpus(runs, root, resolve, on_end, script) -> None:
  del script
  try:
    backends.run_gpus(
      runs, root, _DRY_RUN.value, _NUM_GPUS.value, _GPUS_PER_RUN.value, resolve, on_end
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def _tpu(runs, root, resolve, on_end, script) -> None:
  del script
  run_tpu(runs, root, resolve, on_end)


def _slurm(runs, root, resolve, on_end, script) -> None:
  del on_end  # the array's runs end after this process
  run_slurm(runs, root, resolve, script)


# --backend: name -> how one phase's runs are started (runs, root, resolve, on_end, sbatch file).
Backend = Callable[[list[grid.Run], epath.Path, backends.Resolve, Callable[[], None], str], None]
BACKENDS: dict[str, Backend] = {
  "local": _local,
  "inprocess": _inprocess,
  "gpus": _gpus,
  "tpu": _tpu,
  "slurm": _slurm,
}
_BACKEND = flags.DEFINE_enum("backend", "local", list(BACKENDS), "Where the runs go.")


def run_sweep(root: epath.Path, path: str) -> None:
  sweep = grid.load(path)
  runs = grid.expand(sweep)
  protocol = two_phase.spec(sweep, path)
  extended = two_phase.recorded_extensions(root) if protocol else []
  runs.extend(extended)
  reference, others = two_phase.split(runs, protocol.b_opt) if protocol else (runs, [])
  goal = None

  def manifest():
    extra = two_phase.manifest_section(goal, protocol, extended) if protocol else None
    backends.write_manifest(root, path, runs, extra)

  def extend(extra: list[grid.Run], phase: list[grid.Run], label: str, script: str, resolve):
    """Adds runs off the grid to the sweep (and its manifest) and launches them."""
    print(
      f"best learning rate at the edge of its grid: adding {', '.join(r.name for r in extra)}",
      flush=True,
    )
    runs.extend(extra)
    extended.extend(extra)
    phase.extend(extra)
    manifest()
    launch(extra, root, label, script, resolve, manifest)

  manifest()
  if protocol is None:
    launch(runs, root, "", "sweep.sbatch", lambda r: r, manifest)
    manifest()
    return
  launch(
    reference,
    root,
    f"phase 1 (reference batch {protocol.b_opt}): ",
    "phase1.sbatch",
    lambda r: r,
    manifest,
  )
  while (goal := two_phase.target(root, reference, protocol.metric)) is not None:
    extra = two_phase.extensions(root, sweep, reference, protocol, None, {protocol.b_opt})
    if not extra:
      break
    extend(
      extra,
      reference,
      "phase 1, learning rates beyond the grid's edge: ",
      "phase1_lr.sbatch",
      lambda r: r,
    )
  manifest()
  if goal is None:
    print(
      f"phase 2 ({len(others)} runs) starts once the reference runs have ended: run this "
      "command again then",
      flush=True,
    )
    return
  print(
    f"target loss {goal.loss:.6g}: the best reference loss after D={goal.budget:,} tokens; "
    f"phase 2 runs stop at it, within {protocol.cap:g} x D tokens",
    flush=True,
  )
  phase2 = two_phase.Phase2(root, runs, goal, protocol)
  launch(others, root, "phase 2 (other batch sizes): ", "phase2.sbatch", phase2, manifest)
  while all(outcome.is_settled(root / r.name) for r in others):
    extra = two_phase.extensions(
      root, sweep, runs, protocol, goal.loss, {two_phase.batch_of(r) for r in others}
    )
    if not extra:
      break
    extend(
      extra, others, "phase 2, learning rates beyond the grid's edge: ", "phase2_lr.sbatch", phase2
    )
  manifest()


def main(argv: list[str]) -> None:
  del argv
  root = _ROOT.value
  root = epath.Path(root if object_store.is_object_store(root) else os.path.abspath(root))
  try:
    if _STATUS.value:
      print(status_table.render(root))
      return
    if not _SWEEP.value:
      raise ValueError("--sweep=FILE is required (or --status to read the root)")
    run_sweep(root, _SWEEP.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"launch.sweep: {e}", file=sys.stderr)
    sys.exit(2)
  except backends.Stopped as e:  # SIGTERM / SIGINT: the run in progress checkpointed
    print(f"launch.sweep: stopped: {e}", file=sys.stderr)
    sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
  flags.mark_flags_as_required(["root"])
  app.run(main)
