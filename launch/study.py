"""End-to-end studies on one machine: `python -m launch.study cbs|adaptive [--root DIR] [--quick]
[--config=CONFIG] [--config.KEY=VALUE ...]`.

`cbs` measures the critical batch size of a model on its data (Zhang et al. 2024, Definition 1), by
default the tiny model on the embedded language; `--config` and `--config.KEY=VALUE` put any model
and data under the same protocol (e.g. text files and a SentencePiece model:
`data.source=text_files`, `data.files`, `data.vocab`), the study's own knobs (batch sizes, learning
rates, budgets, run lengths) staying the study's. It runs a sweep over powers-of-two batch sizes
with a learning-rate grid per batch, EWA on, then `analysis.cbs report` at several data budgets D
from the same constant-LR runs (their curves do not depend on the run length), ending with the CBS
table and the report path. To stay in minutes on a CPU it prunes work that cannot change the
answer, as two-phase sweeps do (`launch.two_phase`): reference runs (batch B_opt) train to the
largest D and fix the target; every other run stops at the target (`train.stop_loss`), and is
capped at the steps the best run of its batch size needed so far (`analysis.measure.step_cap`),
since f(B) is a minimum over the learning rates (a run slower than that cannot be the minimum, for
this D or any smaller one).

With `--theory` the report gains the least-squares testbed (`analysis.theory`): SGD on power-law
linear regression, its CBS against data size next to the predicted exponent.

`adaptive` compares the norm-test schedule (Lau et al. 2024) with a small and a large constant batch
and a stagewise ramp at equal tokens, and writes the comparison table and plots.

Rerunning a study reuses every finished or failed run (their workdirs hold done.json or
failed.json).
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

from etils import epath

from analysis import cbs as cbs_analysis
from analysis import measure
from analysis import runs as runs_lib
from launch import backends
from launch import grid
from launch import outcome
from launch import two_phase

CONFIG = "configs/cbs_paper.py:tiny"


@dataclasses.dataclass(frozen=True)
class Plan:
  batches: tuple[int, ...]  # swept batch sizes (sequences of 64 tokens); the first is B_opt
  lr_multipliers: tuple[float, ...]  # learning rates per batch: these x lr_center(B)
  max_budget: int  # largest data budget D in tokens; the report also measures D / 2, / 4, / 8
  eval_tokens: int
  evals_per_budget: int

  @property
  def b_opt(self) -> int:
    return self.batches[0]

  @property
  def budgets(self) -> list[int]:
    return [self.max_budget // k for k in (8, 4, 2, 1)]


FULL = Plan(batches=(4, 8, 16, 32, 64, 128), lr_multipliers=(1.0, 0.5, 2.0), max_budget=256_000,
            eval_tokens=8192, evals_per_budget=32)
QUICK = Plan(batches=(4, 8, 16), lr_multipliers=(1.0,), max_budget=24_576, eval_tokens=2048,
             evals_per_budget=12)


def lr_center(batch: int) -> float:
  """Adam's learning rate grows about as sqrt(B) below the CBS: centre the grid there."""
  return 5e-3 * math.sqrt(batch / 32)


def base_overrides(plan: Plan) -> dict:
  return {"mesh.data": 1, "data_budget_tokens": plan.max_budget,
          "schedule.warmup_tokens": plan.max_budget // 20, "ewa.decays": [0.99, 0.998],
          "eval.tokens": plan.eval_tokens, "eval.batch_size": 32,
          "eval.every_tokens": plan.max_budget // plan.evals_per_budget, "eval.per_doubling": 0,
          "eval.dense_from_tokens": 0,
          "checkpoint.every_tokens": 10 * plan.max_budget, "log.every_steps": 100}


def make_run(batch: int, lr: float, overrides: dict, config: str = CONFIG) -> grid.Run:
  lr = float(f"{lr:.3g}")
  return grid.Run(f"batch.size={batch},optimizer.lr={lr}", config,
                  {**overrides, "batch.size": batch, "optimizer.lr": lr})


class Progress:
  """Runs done / left, elapsed time and an ETA from the mean time of the runs trained here."""

  def __init__(self, total: int):
    self.total, self.done, self.trained, self.start = total, 0, 0, time.monotonic()

  def finished(self, name: str, trained: bool) -> None:
    self.done += 1
    self.trained += trained
    elapsed = time.monotonic() - self.start
    left = self.total - self.done
    eta = f", ETA ~{elapsed / self.trained * left / 60:.1f} min" if self.trained and left else ""
    print(f"[study] {self.done}/{self.total} runs done ({name}{'' if trained else ', reused'}); "
          f"{elapsed / 60:.1f} min elapsed{eta}", flush=True)


def train(run: grid.Run, root: str, progress: Progress) -> runs_lib.Run:
  workdir = os.path.join(root, run.name)
  reused = outcome.is_settled(epath.Path(workdir))
  if not reused:
    backends.run_inprocess([run], epath.Path(root), progress=lambda _: None)
  progress.finished(run.name, not reused)
  return runs_lib.load_run(workdir, run.name)


def theory_blocks(out: str) -> list:
  """The least-squares testbed's section (analysis.theory with its defaults)."""
  from analysis import theory  # noqa: PLC0415
  from cbs.theory import least_squares  # noqa: PLC0415

  print("[study] least-squares testbed: SGD on power-law linear regression ...", flush=True)
  result = theory.run(least_squares.Problem())
  print(f"[study] testbed CBS ~ D^{result['simulated']['exponent']:.2f} (simulated), "
        f"D^{result['expected']['exponent']:.2f} (expected risk), predicted "
        f"D^{result['predicted_exponent']:.2f}", flush=True)
  return theory.write(result, out)


def cbs_study(root: str, plan: Plan, bootstrap: int = 1000, with_theory: bool = False,
              config: str = CONFIG, user: dict | None = None) -> dict:
  """The CBS study of `config` with the `user` overrides (model, data) on top of the study's own."""
  base = {**base_overrides(plan), **(user or {})}
  setup = {"setup": {"config": config, "overrides": user or {}}}
  seq_len = grid.load_config(config, base).data.seq_len
  references = [make_run(plan.b_opt, m * lr_center(plan.b_opt),
                         {**base, "train_tokens": plan.max_budget}, config)
                for m in plan.lr_multipliers]
  total = len(plan.batches) * len(plan.lr_multipliers)
  planned = list(references)
  backends.write_manifest(epath.Path(root), "launch.study cbs", planned, setup)
  progress = Progress(total)
  print(f"[study] {total} runs: batch sizes {list(plan.batches)} x {len(plan.lr_multipliers)} "
        f"learning rates; data budgets {plan.budgets} tokens; root {root}", flush=True)
  done = [train(r, root, progress) for r in references]
  target = measure.target_loss(done, plan.max_budget)
  print(f"[study] target loss at D={plan.max_budget:,} tokens: {target:.4f}", flush=True)
  for batch in plan.batches[1:]:
    for m in plan.lr_multipliers:
      cap = measure.step_cap(done, batch, target)  # the best reference reaches the target
      tokens = two_phase.capped_tokens(cap, batch, seq_len, base["eval.every_tokens"])
      run = make_run(batch, m * lr_center(batch),
                     {**base, "train_tokens": tokens, "train.stop_loss": round(target, 6)}, config)
      planned.append(run)
      backends.write_manifest(epath.Path(root), "launch.study cbs", planned, setup)
      done.append(train(run, root, progress))
  backends.write_manifest(epath.Path(root), "launch.study cbs", planned, setup)
  argv = ["report", "--root", root, "--b_opt", str(plan.b_opt),
          "--budgets", ",".join(str(d) for d in plan.budgets), "--bootstrap", str(bootstrap)]
  results = cbs_analysis.cmd_report(cbs_analysis.parser().parse_args(argv), argv,
                                    theory_blocks if with_theory else lambda out: [])
  law = results["scaling"].get("tokens")
  if law:
    lo, hi = law["exponent_ci"]
    verdict = ("grows" if lo > 0 else "shrinks" if hi < 0 else "shows no significant trend")
    print(f"[study] CBS vs data budget: CBS ~ D^{law['exponent']:.2f} (95% bootstrap interval "
          f"{lo:.2f} .. {hi:.2f}): at this scale the CBS {verdict} with D", flush=True)
  return results


def adaptive_study(root: str, plan: Plan, tokens: int, config: str = CONFIG,
                   user: dict | None = None) -> dict:
  """Norm test vs constant small / large batches vs a stagewise ramp, all for `tokens` tokens."""
  small, large = plan.batches[0], plan.batches[-1]
  base = {**base_overrides(plan), **(user or {}), "train_tokens": tokens,
          "data_budget_tokens": tokens,
          "eval.every_tokens": tokens // plan.evals_per_budget,
          "schedule.warmup_tokens": tokens // 20}
  stages = [[int(tokens * k / len(plan.batches)), b] for k, b in enumerate(plan.batches) if k]
  grow = {"batch.max_size": large, "batch.lr_scaling": "sqrt", "batch.round": "pow2"}
  runs = [make_run(small, lr_center(small), base, config),
          make_run(large, lr_center(large), base, config),
          grid.Run("schedule=ramp", config, {**base, **grow, "batch.size": small,
                                             "optimizer.lr": lr_center(small),
                                             "batch.schedule": "ramp", "batch.ramp": stages}),
          grid.Run("schedule=norm", config, {**base, **grow, "batch.size": small,
                                             "optimizer.lr": lr_center(small),
                                             "batch.schedule": "norm", "batch.eta": 0.5,
                                             "batch.stats_ema": 0.9})]
  backends.write_manifest(epath.Path(root), "launch.study adaptive", runs,
                          {"setup": {"config": config, "overrides": user or {}}})
  progress = Progress(len(runs))
  for r in runs:
    train(r, root, progress)
  argv = ["report", "--root", root, "--skip_cbs", "--bootstrap", "0"]
  return cbs_analysis.cmd_report(cbs_analysis.parser().parse_args(argv), argv)


def parse_overrides(extra: list[str]) -> dict:
  """`--config.KEY=VALUE` arguments as overrides; values read as JSON where they parse (numbers,
  booleans, lists), else kept as strings; ValueError names any other argument."""
  overrides = {}
  for arg in extra:
    key, eq, value = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not eq or not key:
      raise ValueError(f"unrecognized argument {arg!r}: expected --config.KEY=VALUE")
    try:
      overrides[key] = json.loads(value)
    except json.JSONDecodeError:
      overrides[key] = value
  return overrides


def check_root(root: str, setup: dict) -> None:
  """A root holds the runs of one model and data: reusing them for another would mix studies."""
  manifest = os.path.join(root, "manifest.json")
  if os.path.exists(manifest):
    with open(manifest) as f:
      before = json.load(f).get("setup", setup)
    if before != setup:
      raise ValueError(f"--root={root} holds a study of {before}, not {setup}; "
                       "choose another --root")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m launch.study", description=__doc__.split("\n")[0])
  p.add_argument("study", choices=("cbs", "adaptive"))
  p.add_argument("--root", default="",
                 help="where runs and the report go (default ./study/<name>[_<config>])")
  p.add_argument("--quick", action="store_true", help="a reduced study (the test suite's)")
  p.add_argument("--theory", action="store_true",
                 help="cbs: also run the least-squares testbed and add it to the report")
  p.add_argument("--config", default=CONFIG,
                 help=f"the model and data to study (default {CONFIG}); "
                 "then --config.KEY=VALUE ...")
  args, extra = p.parse_known_args(argv)
  plan = QUICK if args.quick else FULL
  name = args.study + ("" if args.config == CONFIG else
                       "_" + os.path.splitext(os.path.basename(args.config.split(":")[0]))[0])
  root = os.path.abspath(args.root or os.path.join("study", name + ("_quick" * args.quick)))
  try:
    user = parse_overrides(extra)
    setup = {"config": args.config, "overrides": user}
    check_root(root, setup)
    grid.load_config(args.config, {**base_overrides(plan), **user})
  except ValueError as e:
    print(f"launch.study: {e}", file=sys.stderr)
    return 2
  os.makedirs(root, exist_ok=True)
  start = time.monotonic()
  try:
    if args.study == "cbs":
      results = cbs_study(root, plan, bootstrap=200 if args.quick else 1000,
                          with_theory=args.theory, config=args.config, user=user)
      summary = {"cbs": {g["name"]: g.get("cbs") for g in results["groups"]},
                 "scaling": results["scaling"]}
    else:
      tokens = plan.max_budget * (1 if args.quick else 2)
      summary = {"schedules": adaptive_study(root, plan, tokens, args.config, user)["schedules"]}
  except ValueError as e:  # a bad value in the user's config, found when its runs are built
    print(f"launch.study: {e}", file=sys.stderr)
    return 2
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump({"study": args.study, "quick": args.quick, "plan": dataclasses.asdict(plan),
               **setup, "wall_seconds": time.monotonic() - start, **summary}, f, indent=2)
  print(f"[study] {args.study} finished in {(time.monotonic() - start) / 60:.1f} min", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
