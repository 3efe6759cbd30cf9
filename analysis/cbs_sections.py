"""The sweep report's sections on the measured CBS: the table of every group's fit and CBS with
its intervals, the scaling laws in N and in D, and one section per group listing its runs."""

import math
import os

from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib

CBS_TABLE_COLUMNS = [
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
]

RUN_COLUMNS = [
  "run",
  "batch",
  "lr",
  "steps to target",
  "tokens to target",
  "eval",
  "last eval step",
  "finished",
]


def _interval(ci) -> str:
  return "-" if not ci or any(math.isnan(v) for v in ci) else f"{ci[0]:.3g} .. {ci[1]:.3g}"


def _cbs_row(g: dict) -> list:
  return [
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


def cbs_table_blocks(groups: list[dict], metric: str, out: str) -> list:
  """The CBS of every group with its fit and intervals, and steps to target against batch size."""
  return [
    report_lib.heading("CBS per model and data budget"),
    report_lib.table(CBS_TABLE_COLUMNS, [_cbs_row(g) for g in groups]),
    report_lib.image(
      plots.steps_vs_batch(groups, os.path.join(out, "steps_vs_batch.png"), metric),
      "Steps to target vs batch size: the best run of each batch size (dots), the fit a + b/B, "
      "linear scaling from B_opt (dotted), the CBS (dashed) with its 95% bootstrap interval "
      "(band); triangles mark runs that never reached the target, at their last step",
    ),
  ]


def scaling_law_blocks(groups: list[dict], laws: dict, out: str) -> list:
  """CBS = d x^exponent in N and in D, each where it varies, with its plot."""
  blocks = []
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
  return blocks


def group_blocks(i: int, g: dict, members: list[runs_lib.Run], metric: str, out: str) -> list:
  """Group `i`: every run with its steps to target, the runs that missed it, the loss curves."""
  blocks = [
    report_lib.heading(f"Group {g['name']} (target {g['target']:.4f})"),
    report_lib.table(
      RUN_COLUMNS,
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
  constant = [r for r in members if not r.adaptive]
  blocks.append(
    report_lib.image(
      plots.loss_curves(constant, g, metric, os.path.join(out, f"loss_curves_{i}.png")),
      f"{g['name']}: eval loss of the best run per batch size",
    )
  )
  return blocks
