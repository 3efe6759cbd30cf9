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
reads Slurm's layout). Remote runs record their own failures (`python -m launch.outcome`); the
remote backends are `launch.remote`'s, this module owns the flags and the order of the phases.
"""

import dataclasses
import os
import signal
import sys
from collections.abc import Callable

from absl import app
from absl import flags
from etils import epath

from cbs import object_store
from cbs.checkpoint import workdir_lock
from launch import backends
from launch import grid
from launch import outcome
from launch import remote
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
  if not (_TPU.value and _ZONE.value):
    raise app.UsageError("--backend=tpu needs --tpu and --zone")
  vm = remote.TpuVm(_TPU.value, _ZONE.value, _REPO.value)
  remote.run_tpu(runs, root, resolve, on_end, vm, _DRY_RUN.value)


def _slurm(runs, root, resolve, on_end, script) -> None:
  del on_end  # the array's runs end after this process
  job = remote.SlurmJob(_NODES.value, _SLURM_ARGS.value)
  remote.run_slurm(runs, root, resolve, script, job, _DRY_RUN.value)


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


@dataclasses.dataclass
class SweepRuns:
  """A sweep's runs as they grow (learning rates past a grid's edge) and what its manifest says:
  the two-phase protocol, once known its target, and the runs added beyond the grid."""

  root: epath.Path
  path: str
  protocol: two_phase.Spec | None
  runs: list[grid.Run]
  extended: list[grid.Run]
  goal: two_phase.Target | None = None

  def manifest(self) -> None:
    extra = (
      two_phase.manifest_section(self.goal, self.protocol, self.extended) if self.protocol else None
    )
    backends.write_manifest(self.root, self.path, self.runs, extra)

  def extend(
    self, extra: list[grid.Run], phase: list[grid.Run], label: str, script: str, resolve
  ) -> None:
    """Adds runs off the grid to the sweep (and its manifest) and launches them."""
    print(
      f"best learning rate at the edge of its grid: adding {', '.join(r.name for r in extra)}",
      flush=True,
    )
    self.runs.extend(extra)
    self.extended.extend(extra)
    phase.extend(extra)
    self.manifest()
    launch(extra, self.root, label, script, resolve, self.manifest)


def run_sweep(root: epath.Path, path: str) -> None:
  """Launches every run of the sweep file; a two-phase sweep's phase 2 once its target is known."""
  sweep = grid.load(path)
  runs = grid.expand(sweep)
  protocol = two_phase.spec(sweep, path)
  state = SweepRuns(
    root, path, protocol, runs, two_phase.recorded_extensions(root) if protocol else []
  )
  runs.extend(state.extended)
  reference, others = two_phase.split(runs, protocol.b_opt) if protocol else (runs, [])
  state.manifest()
  if protocol is None:
    launch(runs, root, "", "sweep.sbatch", lambda r: r, state.manifest)
    state.manifest()
    return
  run_phase1(state, sweep, reference)
  state.manifest()
  if state.goal is None:
    print(
      f"phase 2 ({len(others)} runs) starts once the reference runs have ended: run this "
      "command again then",
      flush=True,
    )
    return
  run_phase2(state, sweep, others)
  state.manifest()


def run_phase1(state: SweepRuns, sweep: dict, reference: list[grid.Run]) -> None:
  """The reference batch's runs; once they have settled (`state.goal`: the target they fix),
  learning rates past its grid's edge while the best reference rate sits on it."""
  protocol = state.protocol
  launch(
    reference,
    state.root,
    f"phase 1 (reference batch {protocol.b_opt}): ",
    "phase1.sbatch",
    lambda r: r,
    state.manifest,
  )
  while (goal := two_phase.target(state.root, reference, protocol.metric)) is not None:
    state.goal = goal
    extra = two_phase.extensions(state.root, sweep, reference, protocol, None, {protocol.b_opt})
    if not extra:
      break
    state.extend(
      extra,
      reference,
      "phase 1, learning rates beyond the grid's edge: ",
      "phase1_lr.sbatch",
      lambda r: r,
    )
  state.goal = goal


def run_phase2(state: SweepRuns, sweep: dict, others: list[grid.Run]) -> None:
  """The other batch sizes, stopped at the target; once they have settled, learning rates past
  each grid's edge while a best rate sits on it."""
  goal, protocol, root = state.goal, state.protocol, state.root
  print(
    f"target loss {goal.loss:.6g}: the best reference loss after D={goal.budget:,} tokens; "
    f"phase 2 runs stop at it, within {protocol.cap:g} x D tokens",
    flush=True,
  )
  phase2 = two_phase.Phase2(root, state.runs, goal, protocol)
  launch(others, root, "phase 2 (other batch sizes): ", "phase2.sbatch", phase2, state.manifest)
  while all(outcome.is_settled(root / r.name) for r in others):
    extra = two_phase.extensions(
      root, sweep, state.runs, protocol, goal.loss, {two_phase.batch_of(r) for r in others}
    )
    if not extra:
      break
    label = "phase 2, learning rates beyond the grid's edge: "
    state.extend(extra, others, label, "phase2_lr.sbatch", phase2)


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
