"""Critical batch size from a table or from a sweep's run directories.

  python -m analysis.cbs fit --csv FILE [--b_opt 256] [--threshold 0.2] [--json OUT] [--plot PNG]
  python -m analysis.cbs report --root SWEEP_ROOT [--out DIR] [--b_opt 256] [--ewa best] [--target L]
  python -m analysis.cbs report --runs DIR[,DIR...] [--out DIR] [--ewa best]

`fit` reads `group,batch_size,steps[,n_params][,tokens]` rows (a researcher's own numbers work),
fits steps = a + b/B per group on log steps, reports S_min = a, B_noise = b/a and the CBS
B* = (1+t) B_opt + t b/a, and across groups fits CBS = d N^beta and CBS = d D^gamma with bootstrap
intervals. `report` measures steps to target from the runs of a `launch.sweep` root (Zhang et al.
2024, Definition 1), then fits the same way and writes report.md, report.html, PNGs, the table as
CSV (re-fittable with `fit`) and results.json (see `sweep_report`). `report --runs` reports any run
directories without a sweep (see `run_report`). This module parses and dispatches.
"""

import argparse
import collections
import csv
import json
import math
import os
import shlex
import sys

from analysis import fits
from analysis import plots
from analysis import report as report_lib
from analysis import run_report
from analysis import sweep_report


def read_table(path: str) -> dict[str, dict]:
  """Groups of a fit CSV: {name: {"batch_sizes", "steps", "n_params"?, "tokens"?}}."""
  if not os.path.exists(path):
    raise ValueError(f"--csv={path!r} does not exist")
  groups = collections.OrderedDict()
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = {"group", "batch_size", "steps"} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(
        f"--csv={path!r} lacks column(s) {sorted(missing)}; it has "
        f"{reader.fieldnames} (needed: group,batch_size,steps[,n_params][,tokens])"
      )
    for line, row in enumerate(reader, start=2):
      g = groups.setdefault(row["group"], {"batch_sizes": [], "steps": []})
      try:
        g["batch_sizes"].append(float(row["batch_size"]))
        g["steps"].append(float(row["steps"]))
        for key in ("n_params", "tokens"):
          if row.get(key):
            g[key] = float(row[key])
      except ValueError:
        raise ValueError(f"{path}:{line}: not a number in {dict(row)}") from None
  if not groups:
    raise ValueError(f"--csv={path!r} has no rows")
  return groups


def fit_table(groups: dict[str, dict], b_opt: float, threshold: float, samples: int = 1000) -> dict:
  """The `fit` command's result: per-group fits and, where N or D vary, the scaling laws."""
  out = {"groups": {}, "scaling": {}}
  for name, g in groups.items():
    fit = fits.fit_steps(g["batch_sizes"], g["steps"])
    out["groups"][name] = {
      "a": fit.a,
      "b": fit.b,
      "b_noise": fit.b_noise,
      "cbs": fits.critical_batch_size(fit, b_opt, threshold),
      "rmse_log": fit.rmse_log,
      **{k: g[k] for k in ("n_params", "tokens") if k in g},
    }
  for key in ("n_params", "tokens"):
    having = [{**g, key: g[key]} for g in groups.values() if key in g]
    if len({g[key] for g in having}) >= 2:
      law = fits.bootstrap_scaling(having, key, b_opt, threshold, samples)
      out["scaling"][key] = {
        "d": law.d,
        "exponent": law.exponent,
        "exponent_ci": list(law.ci),
        "d_ci": list(law.d_ci),
      }
  return out


def format_fit(result: dict) -> str:
  lines = [f"{'group':<24} {'a (S_min)':>11} {'b':>11} {'B_noise':>10} {'CBS':>10}"]
  for name, g in result["groups"].items():
    lines.append(
      f"{name:<24} {g['a']:>11.4g} {g['b']:>11.4g} {g['b_noise']:>10.4g} {g['cbs']:>10.4g}"
    )
  for key, law in result["scaling"].items():
    lo, hi = law["exponent_ci"]
    lines.append(
      f"CBS = {law['d']:.4g} * {key}^{law['exponent']:.3f}  (95% CI of the exponent "
      f"{lo:.3f} .. {hi:.3f})"
    )
  return "\n".join(lines)


def cmd_fit(args) -> None:
  table = read_table(args.csv)
  result = fit_table(table, args.b_opt, args.threshold, args.bootstrap)
  print(format_fit(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  if args.plot:
    groups = [
      {
        "name": n,
        "best": [{"batch_size": b, "steps": s} for b, s in zip(g["batch_sizes"], g["steps"])],
        "b_opt": args.b_opt,
        **result["groups"][n],
      }
      for n, g in table.items()
    ]
    plots.steps_vs_batch(groups, args.plot)


def cmd_runs_report(args, argv: list[str]) -> dict:
  """Writes the report of run directories given by hand (no sweep manifest)."""
  run_dirs = [d for d in args.runs.split(",") if d]
  out = args.out or os.path.join(run_dirs[0], "report")
  command = "python -m analysis.cbs " + shlex.join(argv)
  blocks, results = run_report.build(run_dirs, out, args.ewa, command)
  md, html_path = report_lib.write(blocks, out, "Run report")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2, default=float)
  print(f"report: {html_path}\n        {md}")
  return results


def cmd_report(args, argv: list[str], extra_blocks=lambda out: []) -> dict:
  """Writes the report of a sweep root; `extra_blocks(out_dir)` appends sections (the testbed)."""
  if getattr(args, "runs", ""):
    return cmd_runs_report(args, argv)
  out = args.out or os.path.join(args.root, "report")
  command = "python -m analysis.cbs " + shlex.join(argv)
  budgets = [int(float(d)) for d in args.budgets.split(",")] if args.budgets else []
  blocks, results = sweep_report.build_report(
    args.root,
    out,
    args.b_opt,
    args.threshold,
    args.ewa,
    args.target,
    args.bootstrap,
    command,
    budgets,
    args.skip_cbs,
  )
  sweep_report.save(blocks + extra_blocks(out), results, out)
  for g in results["groups"]:
    print(
      f"{g['name']}: target {g['target']:.4f}, CBS {g.get('cbs', math.nan):.1f} sequences "
      f"(a={g.get('a', math.nan):.4g}, b={g.get('b', math.nan):.4g}; "
      f"not reached: {sum(not r['capped'] for r in g['runs'] if not r['reached'])} run(s), "
      f"capped before the target: {sum(r['capped'] for r in g['runs'])})"
    )
    for warning in g["guards"]["warnings"]:
      print(f"  guard: {warning}")
  return results


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m analysis.cbs", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument(
    "--b_opt", "--b-opt", type=int, default=256, help="reference batch B_opt (sequences)"
  )
  common.add_argument(
    "--threshold",
    type=float,
    default=0.2,
    help="allowed excess steps over linear scaling (0.2 = 20%%)",
  )
  common.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples of the laws")
  fit = sub.add_parser("fit", parents=[common], help="fit a CSV of steps to target")
  fit.add_argument("--csv", required=True)
  fit.add_argument("--json", default="")
  fit.add_argument("--plot", default="", help="PNG of steps vs batch with the fits")
  rep = sub.add_parser("report", parents=[common], help="measure and report a sweep root")
  where = rep.add_mutually_exclusive_group(required=True)
  where.add_argument("--root", help="a launch.sweep root (with manifest.json)")
  where.add_argument("--runs", help="comma-separated run directories, reported without a sweep")
  rep.add_argument("--out", default="", help="report directory (default ROOT/report)")
  rep.add_argument(
    "--ewa",
    default="best",
    help="eval loss used: best (raw and every EWA), none (raw) or an EWA decay",
  )
  rep.add_argument("--target", type=float, default=None, help="target loss (default: reference)")
  rep.add_argument(
    "--skip_cbs",
    action="store_true",
    help="only the schedule comparison and probes (e.g. a root of adaptive runs)",
  )
  rep.add_argument(
    "--budgets",
    default="",
    help="comma-separated data budgets D (tokens) measured from the same constant-LR "
    "runs, instead of each run's data_budget_tokens",
  )
  return p


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  args = parser().parse_args(argv)
  if args.threshold <= 0 or args.b_opt <= 0:
    print(
      f"analysis.cbs: --threshold={args.threshold} and --b_opt={args.b_opt} must be positive",
      file=sys.stderr,
    )
    return 2
  try:
    if args.command == "fit":
      cmd_fit(args)
    else:
      cmd_report(args, argv)
  except (ValueError, FileNotFoundError) as e:
    print(f"analysis.cbs: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
