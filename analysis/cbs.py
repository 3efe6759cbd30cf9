"""Critical batch size from a table or from a sweep's run directories.

  python -m analysis.cbs fit --csv FILE [--b_opt 256] [--threshold 0.2] [--json OUT] [--plot PNG]
  python -m analysis.cbs report --root SWEEP_ROOT [--out DIR] [--b_opt 256] [--ewa best] [--target L]
  python -m analysis.cbs report --runs DIR[,DIR...] [--out DIR] [--ewa best]

`fit` reads `group,batch_size,steps[,n_params][,tokens]` rows (a researcher's own numbers work),
fits steps = a + b/B per group on log steps, reports S_min = a, B_noise = b/a and the CBS
B* = (1+t) B_opt + t b/a, and across groups fits CBS = d N^beta and CBS = d D^gamma with bootstrap
intervals. `report` measures steps to target from the runs of a `launch.sweep` root (Zhang et al.
2024, Definition 1), then fits the same way and writes report.md, report.html, PNGs, the table as
CSV (re-fittable with `fit`) and results.json. `report --runs` reports any run directories without
a sweep (see `run_report`).
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
from analysis import guards
from analysis import measure
from analysis import plots
from analysis import report as report_lib
from analysis import run_report
from analysis import runs as runs_lib
from analysis import scaling_laws
from cbs.checkpoint import run_dir
from studies import cbs_report as study_report


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


def build_report(
  root: str,
  out: str,
  b_opt: int,
  threshold: float,
  metric: str,
  target: float | None,
  samples: int,
  command: str,
  budgets: list[int] = (),
  skip_cbs: bool = False,
) -> tuple[list, dict]:
  """Blocks of the report and the results dict (also written as results.json)."""
  all_runs = runs_lib.load_sweep(root)
  if not all_runs:
    raise ValueError(f"no run under {root} has started (no config.json in any workdir)")
  os.makedirs(out, exist_ok=True)
  measured = runs_lib.at_budgets(all_runs, budgets) if budgets else all_runs
  members = [] if skip_cbs else measure.groups(measured)
  groups = [] if skip_cbs else measure.measure(measured, b_opt, threshold, metric, target, samples)
  laws = measure.scaling(groups, b_opt, threshold, samples)
  fitted = [g for g in groups if "cbs" in g]
  answer, noise_answer = {}, {}
  if len({g["n_params"] for g in fitted}) >= 2 and len({g["tokens"] for g in fitted}) >= 2:
    if budgets:  # one run measures every budget: resample runs, not points
      both = scaling_laws.run_level_answer(
        all_runs,
        list(budgets),
        b_opt,
        threshold,
        metric,
        samples,
        flagged=linear_regime_flags(groups),
      )
      shared = {k: both[k] for k in ("seeds", "samples", "sigma_run", "rho", "resampled")}
      answer = {**both["cbs"], **shared, "sentence": both["sentence"], "groups": len(groups)}
      noise_answer = {**both["noise_scale"], **shared, "groups": len(groups)}
      for g in groups:
        i = next(
          i
          for i, x in enumerate(both["groups"])
          if (x["n_params"], x["tokens"]) == (g["n_params"], g["tokens"])
        )
        g["cbs_ci"], g["b_noise_ci"] = answer["values_ci"][i], noise_answer["values_ci"][i]
    else:
      answer = scaling_laws.answer(groups, b_opt, threshold, samples)
  blocks = [
    report_lib.heading("Critical batch size report", 1),
    report_lib.code(command),
    *guard_blocks(groups),
    report_lib.paragraph(
      f"Runs: {len(all_runs)} under {root}. Target: "
      f"{'given' if target else f'best loss of the batch-{b_opt} runs after D tokens'}"
      f"; loss: {plots.loss_label(metric)}."
      f" CBS = largest batch within {threshold:.0%} of linear scaling from B_opt={b_opt}. "
      f"{CBS_KINDS}"
    ),
  ]
  if answer:
    blocks += study_report.answer_blocks(answer, groups, out, noise_answer)
  if any(g["best"] for g in groups):
    blocks += [
      report_lib.heading("CBS per model and data budget"),
      report_lib.table(
        [
          "group",
          "N",
          "D (tokens)",
          "target loss",
          "target - Bayes floor",
          "a (S_min)",
          "b",
          "B_noise",
          "95% interval",
          "CBS (fit)",
          "95% interval",
          "CBS (points)",
          "B_opt tokens / small-batch limit",
          "rmse log",
          "not reached",
        ],
        [
          [
            g["name"],
            g["n_params"],
            g["tokens"],
            g["target"],
            g.get("target_above_floor", math.nan),
            g.get("a", math.nan),
            g.get("b", math.nan),
            g.get("b_noise", math.nan),
            _interval(g.get("b_noise_ci")),
            g.get("cbs", math.nan),
            _interval(g.get("cbs_ci")),
            g.get("cbs_raw", math.nan),
            g["guards"].get("b_opt_token_overhead", math.nan),
            g.get("rmse_log", math.nan),
            len(g["unreached"]),
          ]
          for g in groups
        ],
      ),
    ]
    blocks.append(
      report_lib.image(
        plots.steps_vs_batch(groups, os.path.join(out, "steps_vs_batch.png"), metric),
        "Steps to target vs batch size: the best run of each batch size (dots), the fit a + b/B, "
        "linear scaling from B_opt (dotted), the CBS (dashed) with its 95% bootstrap interval "
        "(band); triangles mark runs that never reached the target, at their last step",
      )
    )
  for key, law in laws.items():
    lo, hi = law["exponent_ci"]
    blocks += [
      report_lib.heading(f"Scaling law in {'N' if key == 'n_params' else 'D'}"),
      report_lib.paragraph(
        f"CBS = {law['d']:.4g} x {key}^{law['exponent']:.3f}, 95% "
        f"bootstrap interval of the exponent [{lo:.3f}, {hi:.3f}]."
      ),
      report_lib.image(
        plots.cbs_scaling(groups, laws, key, os.path.join(out, f"cbs_vs_{key}.png")),
        f"CBS vs {key} with the fitted power law",
      ),
    ]
  for i, g in enumerate(groups):
    blocks += [
      report_lib.heading(f"Group {g['name']} (target {g['target']:.4f})"),
      report_lib.table(
        [
          "run",
          "batch",
          "lr",
          "steps to target",
          "tokens to target",
          "eval",
          "last eval step",
          "finished",
        ],
        [
          [
            r["run"],
            r["batch_size"],
            r["lr"],
            r["steps"],
            r["tokens"],
            r["metric"] or ("capped before the target" if r["capped"] else "not reached"),
            r["final_step"],
            r["finished"],
          ]
          for r in g["runs"]
        ],
      ),
    ]
    capped = [r["run"] for r in g["runs"] if r["capped"]]
    never = [name for name in g["unreached"] if name not in capped]
    if never:
      blocks.append(report_lib.paragraph("Never reached the target: " + ", ".join(never)))
    if capped:
      blocks.append(
        report_lib.paragraph(
          "Stopped at their token cap before the target (slower than the best learning rate of "
          "their batch size, so not the minimum): " + ", ".join(capped)
        )
      )
    constant = [r for r in members[i] if not r.adaptive]
    blocks.append(
      report_lib.image(
        plots.loss_curves(constant, g, metric, os.path.join(out, f"loss_curves_{i}.png")),
        f"{g['name']}: eval loss of the best run per batch size",
      )
    )
  comparison = measure.adaptive_table(all_runs, metric)
  if comparison:
    blocks += [
      report_lib.heading("Batch-size schedules"),
      report_lib.table(
        ["run", "schedule", "batch (first -> last)"]
        + [f"loss @ {t:,} tok" for t in comparison["tokens"]]
        + [f"steps @ {t:,} tok" for t in comparison["tokens"]],
        [
          [
            r["run"],
            r["schedule"],
            f"{r['initial_batch']} -> {r['final_batch']}",
            *r["losses"],
            *r["steps"],
          ]
          for r in comparison["rows"]
        ],
      ),
      report_lib.image(
        plots.schedules(all_runs, metric, os.path.join(out, "schedules.png")),
        "Batch size and eval loss of adaptive (solid) and constant (dashed) runs",
      ),
    ]
  probes = {}
  for i, r in enumerate(all_runs):
    path = os.path.join(r.workdir, run_dir.PROBES, run_dir.PROBE_RESULT)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      probes[r.name] = probe = json.load(f)
    blocks += [
      report_lib.heading(f"Local critical batch size: {r.name}"),
      report_lib.paragraph(
        f"Branches of {probe['branch_tokens']:,} tokens at k x B (lr x k^"
        f"{probe['lr_exponent']}); k* = largest k within {probe['eps']} of every "
        "smaller k (Merrill et al. 2025). The noise scale is the run's own online "
        "estimate B_simple (batch.gns_every or an adaptive schedule)."
      ),
      report_lib.table(
        ["tokens", "batch", "k*", "local CBS", "noise scale B_simple", "losses by k"],
        [
          [
            p["tokens"],
            p["batch"],
            p["k_star"],
            p["local_cbs"],
            p["grad_noise_scale"],
            " ".join(f"{k:g}:{v:.4f}" for k, v in zip(p["k"], p["losses"])),
          ]
          for p in probe["points"]
        ],
      ),
      report_lib.image(
        plots.local_cbs(r, probe, os.path.join(out, f"local_cbs_{i}.png")),
        "Local CBS (probes), online noise scale and the run's batch size",
      ),
    ]
  results = {
    "command": command,
    "root": root,
    "groups": groups,
    "scaling": laws,
    "answer": answer,
    "answer_noise_scale": noise_answer,
    "schedules": comparison,
    "probes": probes,
  }
  return blocks, results


CBS_KINDS = (
  "'CBS (fit)' is B* = (1+t) B_opt + t b/a from the fit steps = a + b/B over every batch size: it "
  "interpolates between the swept batch sizes; its interval resamples the runs in a study (see "
  "the answer) and the points otherwise. "
  "'CBS (points)' applies the same rule to the measured points alone, so it is always a swept "
  "batch size and jumps by the grid's ratio with one noisy point; the scaling laws use the fitted "
  "CBS."
)


def _interval(ci) -> str:
  return "-" if not ci or any(math.isnan(v) for v in ci) else f"{ci[0]:.3g} .. {ci[1]:.3g}"


def linear_regime_flags(groups: list[dict]) -> dict[tuple[float, float], str]:
  """(N, D) -> why, for the groups whose Definition-1 CBS rests on too little of the linear regime:
  B_opt above `guards.MAX_TOKEN_OVERHEAD` of the small-batch limit's tokens, or fewer than
  `guards.MIN_BELOW` batch sizes below the CBS."""
  out = {}
  for g in groups:
    if "cbs" not in g:
      continue
    why = []
    if g["guards"]["points_below_cbs"] < guards.MIN_BELOW:
      why.append(f"{g['guards']['points_below_cbs']} batch sizes below its CBS")
    if not g["guards"]["b_opt_token_overhead"] <= guards.MAX_TOKEN_OVERHEAD:
      why.append(f"B_opt needs {g['guards']['b_opt_token_overhead']:.2f}x the small-batch tokens")
    if why:
      out[(float(g["n_params"]), float(g["tokens"]))] = "; ".join(why)
  return out


def guard_blocks(groups: list[dict]) -> list:
  """The report's first section: every failing guard as one line, or a line saying none failed."""
  if not groups:
    return []
  failed: dict[str, list[str]] = {}  # one line per warning, naming the groups it applies to
  for g in groups:
    for w in g["guards"]["warnings"]:
      failed.setdefault(w, []).append(g["name"])
  lines = [
    f"{'every group' if len(names) == len(groups) > 1 else '; '.join(names)}: {w}"
    for w, names in failed.items()
  ]
  checked = (
    "Checked per group: best learning rate of each batch size inside its grid, at least "
    f"{guards.MIN_BELOW} batch sizes below the CBS and {guards.MIN_SIDE} above it, the CBS "
    "inside the batch sizes that reached the target, every batch size reached, and "
    f"b_opt_token_overhead: B_opt within {guards.MAX_TOKEN_OVERHEAD}x the tokens of the "
    "small-batch limit."
  )
  if not lines:
    return [report_lib.heading("Guards"), report_lib.paragraph(checked + " All passed.")]
  return [
    report_lib.heading("Guards"),
    report_lib.paragraph(checked + " Failed:"),
    report_lib.items(lines),
  ]


def write_table_csv(groups: list[dict], path: str) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["group", "batch_size", "steps", "n_params", "tokens"])
    for g in groups:
      for row in g["best"]:
        writer.writerow([g["name"], row["batch_size"], row["steps"], g["n_params"], g["tokens"]])


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
  blocks, results = build_report(
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
  save(blocks + extra_blocks(out), results, out)
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


def save(blocks: list, results: dict, out: str) -> None:
  """report.md, report.html, results.json and the re-fittable cbs_table.csv under `out`."""
  md, html_path = report_lib.write(blocks, out, "Critical batch size report")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2, default=float)
  write_table_csv(results["groups"], os.path.join(out, "cbs_table.csv"))
  print(f"report: {html_path}\n        {md}")


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
