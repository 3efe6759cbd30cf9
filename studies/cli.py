"""End-to-end studies on one machine: `python -m launch.study cbs|adaptive [--root DIR] [--quick]
[--pilot] [--seeds=K] [--widths=W,...] [--config=CONFIG] [--config.KEY=VALUE ...]`.

`cbs` asks the critical-batch-size paper's question (Zhang et al. 2024): does the CBS scale with
data size or with model size? A pilot first checks that the model widths move the loss (else it
refuses, naming widths to use; `--pilot` stops after it). Then it sweeps batch sizes from 1 and
learning rates (EWA on, constant learning rate) for three model widths with K seeds each, measures
the CBS and B_noise at four data budgets from the same runs, fits c N^alpha D^beta for both with
intervals that resample runs, states the design's power, runs the protocol ablation (cosine and
WSD) at one (N, D), and writes a report that opens with the answer (`studies.cbs_study`). By
default the tiny model on the embedded language; `--config` and `--config.KEY=VALUE` put any model
and data under the same protocol (widths are then relative to the config's `model.d_model`), the
study's own knobs (batch sizes, learning rates, budgets, run lengths) staying the study's. With
`--theory` the report gains the least-squares testbed (`analysis.theory`).

`adaptive` compares batch-size schedules with constant batches at equal tokens and equal steps
(`studies.adaptive_study`).

Both print a progress bar weighted by each run's expected cost, with an ETA, and reuse every
finished or failed run when rerun (their workdirs hold done.json or failed.json).
"""

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

from cbs.checkpoint import run_dir
from cbs.config import overrides as config_overrides
from launch import backends
from launch import grid
from studies import adaptive_plan
from studies import adaptive_study
from studies import cbs_plan as study_plan
from studies import cbs_study
from studies.cbs_plan import CONFIG
from studies.cbs_plan import FULL
from studies.cbs_plan import QUICK

# The plan of either study.
AnyPlan = study_plan.Plan | adaptive_plan.AdaptivePlan


def theory_blocks(out: str) -> list:
  """The least-squares testbed's section (analysis.theory with its defaults)."""
  from analysis import theory  # noqa: PLC0415
  from cbs.theory import least_squares  # noqa: PLC0415

  print("[study] least-squares testbed: SGD on power-law linear regression ...", flush=True)
  result = theory.run(least_squares.Problem())
  print(
    f"[study] testbed CBS ~ D^{result['simulated']['exponent']:.2f} (simulated), "
    f"D^{result['expected']['exponent']:.2f} (expected risk), predicted "
    f"D^{result['predicted_exponent']:.2f}",
    flush=True,
  )
  return theory.write(result, out)


def with_options(plan: study_plan.Plan, seeds: int, widths: str) -> study_plan.Plan:
  """The plan with `--seeds` and `--widths` applied; ValueError names a bad value."""
  if seeds < 0:
    raise ValueError(f"--seeds={seeds}: need a positive number of seeds")
  if widths:
    try:
      values = tuple(sorted(float(w) for w in widths.split(",")))
    except ValueError:
      raise ValueError(f"--widths={widths!r}: expected comma-separated positive numbers") from None
    if len(values) < 2 or values[0] <= 0 or len(set(values)) < len(values):
      raise ValueError(f"--widths={widths!r}: need at least two distinct positive widths")
    middle = values[len(values) // 2]
    plan = dataclasses.replace(plan, widths=values, ablation_width=middle)
  return dataclasses.replace(plan, seeds=seeds or plan.seeds)


def check_root(root: str, setup: dict) -> None:
  """A root holds the runs of one model and data: reusing them for another would mix studies."""
  manifest = run_dir.read_manifest(root)
  if manifest is not None:
    before = manifest.get("setup", setup)
    if before != setup:
      raise ValueError(
        f"--root={root} holds a study of {before}, not {setup}; choose another --root"
      )


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
  """The study's flags; what is left (`--config.KEY=VALUE ...`) are config overrides."""
  p = argparse.ArgumentParser(prog="python -m launch.study", description=__doc__.split("\n")[0])
  p.add_argument("study", choices=("cbs", "adaptive"))
  p.add_argument(
    "--root", default="", help="where runs and the report go (default ./study/<name>[_<config>])"
  )
  p.add_argument("--quick", action="store_true", help="a reduced study (the test suite's)")
  p.add_argument(
    "--theory",
    action="store_true",
    help="cbs: also run the least-squares testbed and add it to the report",
  )
  p.add_argument(
    "--config",
    default=CONFIG,
    help=f"the model and data to study (default {CONFIG}); then --config.KEY=VALUE ...",
  )
  p.add_argument("--pilot", action="store_true", help="cbs: only the pilot (leverage on N)")
  p.add_argument(
    "--seeds",
    type=int,
    default=0,
    help="cbs: seeds per (width, batch, learning rate) (default 2, --quick 1)",
  )
  p.add_argument(
    "--widths", default="", help="cbs: model widths relative to the config's d_model, e.g. 0.25,0.5"
  )
  return p.parse_known_args(argv)


def study_root(args: argparse.Namespace) -> str:
  """`--root`, or ./study/<study>[_<config file>][_quick]."""
  name = args.study + (
    ""
    if args.config == CONFIG
    else "_" + os.path.splitext(os.path.basename(args.config.split(":")[0]))[0]
  )
  return os.path.abspath(args.root or os.path.join("study", name + ("_quick" * args.quick)))


def validated(args: argparse.Namespace, extra: list[str], root: str) -> tuple[AnyPlan, dict]:
  """The study's plan and the user's config overrides, every value checked before anything is
  written; ValueError names a bad one."""
  if args.study == "adaptive":
    plan = adaptive_plan.QUICK if args.quick else adaptive_plan.FULL
  else:
    plan = QUICK if args.quick else FULL
  user = config_overrides.parse_flags(extra)
  setup = {"config": args.config, "overrides": user}
  if args.study == "adaptive":
    cbs_only = [
      f
      for f, v in (("--pilot", args.pilot), ("--seeds", args.seeds), ("--widths", args.widths))
      if v
    ]
    if cbs_only:
      raise ValueError(f"{', '.join(cbs_only)}: for the cbs study only")
    check_root(root, setup)
    adaptive_study.check(plan, args.config, user)
  else:
    plan = with_options(plan, args.seeds, args.widths)
    check_root(root, setup)
    config = grid.load_config(args.config, {**study_plan.base_overrides(plan), **user})
    for width in plan.widths:
      study_plan.d_model(config, width)
  return plan, user


def run_study(
  args: argparse.Namespace,
  plan: AnyPlan,
  root: str,
  user: dict,
) -> dict:
  """Runs the chosen study; returns the summary study.json keeps of its results."""
  if args.study == "adaptive":
    results = adaptive_study.adaptive_study(root, plan, args.config, user)
    return {"schedules": results["schedules"], "frontier": results["frontier"]}
  results = cbs_study.cbs_study(
    root,
    plan,
    bootstrap=200 if args.quick else 1000,
    theory_blocks=theory_blocks if args.theory else None,
    config=args.config,
    user=user,
    pilot_only=args.pilot,
    refuse=not args.quick,
  )
  if args.pilot:
    return {}
  return {
    "cbs": {g["name"]: g.get("cbs") for g in results["groups"]},
    "b_noise": {g["name"]: g.get("b_noise") for g in results["groups"]},
    "answer": results["answer"],
    "answer_noise_scale": results["answer_noise_scale"],
    "ablation": results["ablation"],
  }


def write_record(
  root: str, args: argparse.Namespace, plan: AnyPlan, user: dict, start: float, summary: dict
) -> None:
  """ROOT/study.json: the invocation, its plan and setup, its wall time and the summary."""
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump(
      {
        "study": args.study,
        "quick": args.quick,
        "plan": dataclasses.asdict(plan),
        "config": args.config,
        "overrides": user,
        "wall_seconds": time.monotonic() - start,
        **summary,
      },
      f,
      indent=2,
    )


def main(argv: list[str] | None = None) -> int:
  """Bad input: one line on stderr, exit 2, nothing written; stopped by a signal: 128 + SIGTERM."""
  args, extra = parse_args(argv)
  root = study_root(args)
  try:
    plan, user = validated(args, extra, root)
  except ValueError as e:
    print(f"launch.study: {e}", file=sys.stderr)
    return 2
  os.makedirs(root, exist_ok=True)
  start = time.monotonic()
  try:
    summary = run_study(args, plan, root, user)
  except ValueError as e:  # a bad value in the user's config, found when its runs are built
    print(f"launch.study: {e}", file=sys.stderr)
    return 2
  except backends.Stopped as e:  # SIGTERM / SIGINT: the run in progress checkpointed
    print(f"launch.study: stopped: {e}", file=sys.stderr)
    return 128 + signal.SIGTERM
  write_record(root, args, plan, user, start, summary)
  print(f"[study] {args.study} finished in {(time.monotonic() - start) / 60:.1f} min", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
