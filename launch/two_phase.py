"""A CBS sweep in two phases (Zhang et al. 2024, Definition 1), so every batch can reach the target.

A sweep file opts in with `"two_phase": {"b_opt": 256, "cap": 8}`. Phase 1 trains the reference
batch B_opt (all its learning rates, b2, EWA decays) to the data budget D; the target is the best
loss they reach after D tokens (`analysis.measure.target_loss`, from their run directories). Phase 2
runs every other batch with `train.stop_loss=<target>` and up to `cap x D` tokens (a batch of 16384
needs about 6.3 D at 151M), capped further, as the study does, at the steps after which a run can
no longer be the minimum of its batch (`analysis.measure.step_cap`, from the runs finished so far).

f(B) is a minimum over learning rates, so once a phase has settled, every batch size whose best
learning rate is the smallest or largest of its grid gets the next one beyond that edge (by the
grid's ratio, `analysis.guards.lr_extensions`), until the best is inside its grid or the batch size
has `extend_lr` learning rates beyond the sweep's: the reference batch before the target is fixed (a
better reference lowers it), the others with phase 2's stop and caps.
"""

import dataclasses
import math

from etils import epath

from analysis import guards
from analysis import measure
from analysis import runs as runs_lib
from cbs.checkpoint import run_dir
from launch import grid
from launch import outcome


@dataclasses.dataclass(frozen=True)
class Spec:
  b_opt: int
  cap: float = 8.0  # phase-2 runs may train up to cap x D tokens
  metric: str = "best"  # eval keys the target and crossings use (see analysis.runs.metric_names)
  extend_lr: int = 2  # learning rates a batch size may get beyond the sweep's grid (0: none)


def spec(sweep: dict, path: str) -> Spec | None:
  """The sweep's `two_phase` section (None without one); ValueError naming a bad value."""
  if "two_phase" not in sweep:
    return None
  given = dict(sweep["two_phase"])
  unknown = set(given) - {f.name for f in dataclasses.fields(Spec)}
  if unknown or "b_opt" not in given:
    raise ValueError(
      f"sweep {path!r}: two_phase={given!r} needs b_opt and allows cap, metric, extend_lr"
    )
  result = Spec(**given)
  if result.cap < 1:
    raise ValueError(f"sweep {path!r}: two_phase cap={result.cap} must be >= 1 (runs of D tokens)")
  if result.extend_lr < 0:
    raise ValueError(f"sweep {path!r}: two_phase extend_lr={result.extend_lr} must be >= 0")
  return result


def batch_of(run: grid.Run) -> int:
  if "batch.size" not in run.overrides:
    raise ValueError(f"run {run.name}: a two-phase sweep needs batch.size among its axes")
  return int(run.overrides["batch.size"])


def split(runs: list[grid.Run], b_opt: int) -> tuple[list[grid.Run], list[grid.Run]]:
  """(reference runs at B_opt, the others by increasing batch: pruning learns from smaller ones)."""
  reference = [r for r in runs if batch_of(r) == b_opt]
  if not reference:
    raise ValueError(
      f"two_phase b_opt={b_opt} is not among the swept batch sizes "
      f"{sorted({batch_of(r) for r in runs})}"
    )
  return reference, sorted((r for r in runs if batch_of(r) != b_opt), key=batch_of)


@dataclasses.dataclass(frozen=True)
class Target:
  loss: float
  budget: int  # D in tokens
  seq_len: int
  eval_every: int  # eval.every_tokens of the reference runs: pruned runs end one eval past the cap


def target(root: epath.Path, reference: list[grid.Run], metric: str) -> Target | None:
  """The phase-1 target once every reference run is settled and one finished; else None."""
  if not all(outcome.is_settled(root / r.name) for r in reference):
    return None
  done = [
    runs_lib.load_run(root / r.name, r.name)
    for r in reference
    if outcome.status(root / r.name) == "finished"
  ]
  if not done:
    raise ValueError(
      f"every reference run (batch {batch_of(reference[0])}) failed: no target; see --status"
    )
  budget = done[0].data_budget
  loss = measure.target_loss(done, budget, metric)
  if math.isnan(loss):
    raise ValueError(
      f"no reference run evaluated up to D={budget:,} tokens (they train "
      f"{done[0].config['train_tokens']:,}): phase 1 trains to data_budget_tokens"
    )
  return Target(loss, budget, done[0].seq_len, int(done[0].config["eval"]["every_tokens"]))


def capped_tokens(steps: float, batch: int, seq_len: int, every: int) -> int:
  """Tokens of a run capped at `steps`: rounded up to the eval cadence, plus one eval past it."""
  return int(math.ceil(steps * batch * seq_len / every) + 1) * every


class Phase2:
  """Completes a phase-2 run's overrides just before it starts, from the runs finished by then."""

  def __init__(self, root: epath.Path, runs: list[grid.Run], goal: Target, spec_: Spec):
    self.root, self.runs, self.goal, self.spec = root, runs, goal, spec_
    self._loaded: dict[str, runs_lib.Run] = {}

  def finished(self) -> list[runs_lib.Run]:
    for r in self.runs:
      if r.name not in self._loaded and outcome.status(self.root / r.name) == "finished":
        self._loaded[r.name] = runs_lib.load_run(self.root / r.name, r.name)
    return list(self._loaded.values())

  def __call__(self, run: grid.Run) -> grid.Run:
    batch, goal = batch_of(run), self.goal
    workdir = self.root / run.name
    if run_dir.has_run(workdir):  # a resumed run keeps its length (a shorter cap: unfinished)
      tokens = run_dir.read_config(workdir)["train_tokens"]
    else:
      tokens = int(self.spec.cap * goal.budget)
      steps = measure.step_cap(self.finished(), batch, goal.loss, self.spec.metric)
      if math.isfinite(steps):
        tokens = min(tokens, capped_tokens(steps, batch, goal.seq_len, goal.eval_every))
    return dataclasses.replace(
      run,
      overrides={
        **run.overrides,
        "train_tokens": tokens,
        "data_budget_tokens": goal.budget,
        "train.stop_loss": round(goal.loss, 6),
      },
    )


def extensions(
  root: epath.Path,
  sweep: dict,
  runs: list[grid.Run],
  spec_: Spec,
  target_loss: float | None,
  batches: set[int],
) -> list[grid.Run]:
  """Runs beyond the edge of the learning-rate grid of `batches`, from the settled `runs`.

  Each copies the best run of its batch size (its other axes, e.g. b2) with the next learning rate;
  none without an `optimizer.lr` axis. `target_loss` None: the reference runs' own target.
  """
  lrs = sweep["axes"].get("optimizer.lr")
  if not spec_.extend_lr or not lrs:
    return []
  loaded = [
    runs_lib.load_run(root / r.name, r.name) for r in runs if run_dir.has_run(root / r.name)
  ]
  groups = measure.measure(loaded, spec_.b_opt, metric=spec_.metric, target=target_loss, samples=0)
  best = {e["batch_size"]: e["best_run"] for g in groups for e in g["guards"]["batches"]}
  by_name = {r.name: r for r in runs}
  extra = []
  for batch, lr in guards.lr_extensions(groups, len(lrs) + spec_.extend_lr, batches):
    template = by_name[best[batch]].overrides
    extra.append(
      grid.at(sweep, {k: lr if k == "optimizer.lr" else template[k] for k in sweep["axes"]})
    )
  return [r for r in extra if r.name not in by_name]


def recorded_extensions(root: epath.Path) -> list[grid.Run]:
  """The runs an earlier call added beyond the grid (the manifest's `two_phase.extended`)."""
  content = run_dir.read_manifest(root)
  if content is None:
    return []
  names = set(content.get("two_phase", {}).get("extended", ()))
  return [
    grid.Run(e["name"], e["config"], e["overrides"]) for e in content["runs"] if e["name"] in names
  ]


def manifest_section(goal: Target | None, spec_: Spec, extended: list[grid.Run]) -> dict:
  """What the manifest records about the protocol: the target once phase 1 is over, the runs
  added beyond the grid."""
  section = {
    "b_opt": spec_.b_opt,
    "cap": spec_.cap,
    "metric": spec_.metric,
    "extend_lr": spec_.extend_lr,
    "extended": [r.name for r in extended],
  }
  if goal:
    section.update(target=goal.loss, data_budget_tokens=goal.budget)
  return {"two_phase": section}
