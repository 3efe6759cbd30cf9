"""The least-squares CBS testbed end to end: `python -m analysis.theory [--out DIR]`.

Runs `cbs.theory.least_squares` over batch sizes x learning rates x data budgets twice - the
exact expected-risk recursion and the stochastic simulation (mean over seeds) - measures steps to
target as the CBS protocol does, fits CBS = d D^gamma for both, and compares with the predicted
gamma = (b - 1) / (a + b - 1). Writes `theory_cbs.csv` (the `analysis.cbs fit` format), a JSON
summary and a plot; `launch.study cbs --theory` adds them to the study report.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

from analysis import fits
from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib
from cbs.theory import least_squares as ls

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LRS = tuple(float(x) for x in np.geomspace(0.01, 1.0, 9))
BUDGETS = (2_048, 4_096, 8_192, 16_384)


def first_crossing(curve: np.ndarray, target: float) -> float:
  """Steps (1-based) until a risk curve reaches `target`, interpolated as for real runs."""
  return runs_lib.first_crossing(np.arange(1, curve.shape[0] + 1), curve, target)


def cbs_rows(curves: dict[int, np.ndarray], budgets: list[int], dim: int) -> list[dict]:
  """Steps to target per data budget D (samples) and batch: rows of `analysis.cbs fit`'s CSV.

  `curves[B]` is the risk per (lr, step) at batch B, the first (smallest) B being B_opt. The target
  for D is the best risk B_opt reaches after D samples; f(B) is the minimum over learning rates.
  """
  b_opt = min(curves)
  rows = []
  for d in budgets:
    target = float(np.nanmin(curves[b_opt][:, d // b_opt - 1]))
    for b in sorted(curves):
      found = [first_crossing(curve, target) for curve in curves[b]]
      found = [s for s in found if not math.isnan(s)]
      if found:
        rows.append(
          {
            "group": f"D={d}",
            "batch_size": b,
            "steps": min(found),
            "tokens": d,
            "n_params": dim,
            "target": target,
          }
        )
  return rows


def run(
  problem: ls.Problem,
  batches=BATCHES,
  lrs=LRS,
  budgets=BUDGETS,
  seeds: int = 16,
  threshold: float = 0.2,
) -> dict:
  """Both measurements and their fits; the simulation runs each batch only as long as needed."""
  longest = max(budgets) // batches[0]
  expected = {b: ls.expected_risk(problem, lrs, b, longest) for b in batches}
  lowest = min(float(np.nanmin(expected[batches[0]][:, d // batches[0] - 1])) for d in budgets)
  simulated = {}
  for b in batches:
    needed = [first_crossing(c, lowest) for c in expected[b]]
    needed = [n for n in needed if not math.isnan(n)]
    steps = longest if b == batches[0] or not needed else min(longest, int(2 * min(needed)) + 20)
    simulated[b] = ls.smooth(ls.simulate(problem, lrs, b, steps, seeds=seeds))
  out = {
    "problem": {"dim": problem.dim, "a": problem.a, "b": problem.b, "noise": problem.noise},
    "predicted_exponent": problem.predicted_exponent(),
    "batches": list(batches),
    "lrs": list(lrs),
    "budgets": list(budgets),
    "seeds": seeds,
  }
  for name, curves in (("expected", expected), ("simulated", simulated)):
    rows = cbs_rows(curves, list(budgets), problem.dim)
    groups = {}
    for d in budgets:
      mine = [r for r in rows if r["tokens"] == d]
      fit = fits.fit_steps([r["batch_size"] for r in mine], [r["steps"] for r in mine])
      groups[d] = {
        "target": mine[0]["target"],
        "a": fit.a,
        "b": fit.b,
        "cbs": fits.critical_batch_size(fit, batches[0], threshold),
        "batch_sizes": [r["batch_size"] for r in mine],
        "steps": [r["steps"] for r in mine],
        "tokens": d,
      }
    law = fits.bootstrap_scaling(list(groups.values()), "tokens", batches[0], threshold, 500)
    out[name] = {
      "rows": rows,
      "groups": {str(d): g for d, g in groups.items()},
      "exponent": law.exponent,
      "exponent_ci": list(law.ci),
      "d": law.d,
    }
  return out


def write(result: dict, out_dir: str) -> list:
  """CSV, JSON and plot; returns report blocks."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "theory_cbs.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["group", "batch_size", "steps", "n_params", "tokens"])
    for r in result["simulated"]["rows"]:
      writer.writerow([r["group"], r["batch_size"], r["steps"], r["n_params"], r["tokens"]])
  with open(os.path.join(out_dir, "theory.json"), "w") as f:
    json.dump(result, f, indent=2)
  plot = plots.theory(result, os.path.join(out_dir, "theory_cbs_vs_data.png"))
  p = result["problem"]
  rows = [
    [
      d,
      result["expected"]["groups"][d]["cbs"],
      result["simulated"]["groups"][d]["cbs"],
      result["simulated"]["groups"][d]["target"],
    ]
    for d in map(str, result["budgets"])
  ]
  sim, exp = result["simulated"], result["expected"]
  return [
    report_lib.heading("Least-squares testbed"),
    report_lib.paragraph(
      f"SGD on linear regression, dimension {p['dim']}, spectrum i^-{p['a']}, signal "
      f"i^-{p['b']}, label noise {p['noise']}; batches {result['batches']} (B_opt = "
      f"{result['batches'][0]}), {len(result['lrs'])} learning rates, {result['seeds']} "
      "seeds. CBS per data budget D (samples), from the exact expected-risk recursion and "
      "from the simulation:"
    ),
    report_lib.table(
      ["D (samples)", "CBS (expected risk)", "CBS (simulated)", "target risk"], rows
    ),
    report_lib.paragraph(
      f"Fitted CBS ~ D^gamma: simulated gamma = {sim['exponent']:.3f} (95% bootstrap "
      f"{sim['exponent_ci'][0]:.3f} .. {sim['exponent_ci'][1]:.3f}), expected-risk gamma = "
      f"{exp['exponent']:.3f}; predicted (b-1)/(a+b-1) = {result['predicted_exponent']:.3f}."
    ),
    report_lib.image(plot, "Testbed CBS vs data size, with the predicted slope"),
  ]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m analysis.theory", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--out", default="study/theory")
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--a", type=float, default=2.0)
  parser.add_argument("--b", type=float, default=2.0)
  parser.add_argument("--noise", type=float, default=1.0)
  parser.add_argument("--seeds", type=int, default=16)
  args = parser.parse_args(argv)
  if not (args.a > 1 and args.b > 1 and args.dim > 1 and args.seeds > 0):
    print(
      f"analysis.theory: need a > 1, b > 1, dim > 1, seeds > 0 (got a={args.a}, b={args.b}, "
      f"dim={args.dim}, seeds={args.seeds})",
      file=sys.stderr,
    )
    return 2
  result = run(ls.Problem(args.dim, args.a, args.b, args.noise), seeds=args.seeds)
  blocks = write(result, args.out)
  report_lib.write(
    [report_lib.heading("Least-squares CBS testbed", 1), *blocks],
    args.out,
    "Least-squares CBS testbed",
  )
  for d in map(str, result["budgets"]):
    print(
      f"D={d:>6}: CBS expected {result['expected']['groups'][d]['cbs']:8.2f}  simulated "
      f"{result['simulated']['groups'][d]['cbs']:8.2f}"
    )
  print(
    f"gamma: simulated {result['simulated']['exponent']:.3f} "
    f"{result['simulated']['exponent_ci']}, expected {result['expected']['exponent']:.3f}, "
    f"predicted {result['predicted_exponent']:.3f}\nreport: {os.path.join(args.out, 'report.html')}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
