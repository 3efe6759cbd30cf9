"""The CBS study's pilot: a few short runs per candidate width, before the sweep, that say whether
model size moves the loss enough for a trend in N to be seen (`studies.pilot_measure`).

Per width, at the centre learning rate and seed 0: B_opt to the smallest D (its loss there is the
target), the first pilot batch to the largest D (the loss at both ends of D), and the other pilot
batches until they reach the target. Runs live under ROOT/pilot and are reused on rerun.
"""

import math
import os

from etils import epath

from analysis import report as report_lib
from analysis import runs as runs_lib
from launch import backends
from studies import cbs_plan as study_plan
from studies import pilot_measure as pilot_lib
from studies.cbs_plan import Plan

COMMAND = "python -m launch.study cbs --pilot"


def runs_of(plan: Plan, config: str, base: dict, d_model: int, target: float | None) -> list:
  """The width's runs: the B_opt and long runs, then (with `target`) the short larger batches."""
  model = {**base, "model.d_model": d_model, "seed": 0}
  prefix = f"d_model={d_model},"
  make = lambda batch, extra: study_plan.make_run(
    batch, study_plan.lr_center(batch, d_model), {**model, **extra}, config, prefix
  )
  runs = [
    make(plan.b_opt, {"train_tokens": plan.budgets[0]}),
    make(plan.pilot_batches[0], {"train_tokens": plan.max_budget}),
  ]
  if target is not None:
    runs += [
      make(b, {"train_tokens": plan.max_budget, "train.stop_loss": round(target, 6)})
      for b in plan.pilot_batches[1:]
    ]
  return runs


def run_pilot(
  root: str, plan: Plan, config: str, base: dict, models: list, seq_len: int, setup: dict, train
) -> list[pilot_lib.Width]:
  """Trains (or reuses) the pilot runs of `models` [(width, d_model)] with `train(run, root,
  progress)`, and measures each width."""
  pilot_root = os.path.join(root, "pilot")
  costs = {}
  for _, d_model in models:
    for r in runs_of(plan, config, base, d_model, math.nan):
      costs[r.name] = study_plan.expected_cost(
        r.overrides["batch.size"], r.overrides["train_tokens"], d_model, seq_len
      )
  progress = study_plan.Progress(costs)
  planned, rows = [], []
  for width, d_model in models:
    first = runs_of(plan, config, base, d_model, None)
    planned += first
    backends.write_manifest(epath.Path(pilot_root), COMMAND, planned, setup)
    reference, long_run = (train(r, pilot_root, progress) for r in first)
    target = runs_lib.loss_after(reference, plan.budgets[0], "best")
    rest = runs_of(plan, config, base, d_model, target)[2:]
    planned += rest
    backends.write_manifest(epath.Path(pilot_root), COMMAND, planned, setup)
    short = [reference, *(train(r, pilot_root, progress) for r in rest)]
    rows.append(
      pilot_lib.measure(width, d_model, long_run, short, (plan.budgets[0], plan.max_budget))
    )
  return rows


def blocks(rows: list[pilot_lib.Width], decision: pilot_lib.Decision, plan: Plan) -> list:
  """The pilot table and its verdict: the report's first section."""
  low, high = plan.budgets[0], plan.max_budget
  return [
    report_lib.heading("Pilot: does model size move the loss?"),
    report_lib.table(
      [
        "d_model",
        "N",
        f"loss at D={low:,}",
        f"loss at D={high:,}",
        "change across D",
        f"B_noise at D={low:,}",
        "steps to that target by batch",
      ],
      [
        [
          r.d_model,
          r.n_params,
          r.loss_min_d,
          r.loss_max_d,
          r.d_spread,
          r.b_noise,
          ", ".join(f"{b}: {s:.0f}" for b, s in r.points),
        ]
        for r in rows
      ],
    ),
    report_lib.paragraph(summary(decision, rows, plan)),
  ]


def summary(decision: pilot_lib.Decision, rows: list[pilot_lib.Width], plan: Plan) -> str:
  d_models = {r.width: r.d_model for r in rows}
  study = ", ".join(str(d_models[w]) for w in plan.widths)
  text = (
    f"Losses of the batch-{plan.pilot_batches[0]} runs. Across the study's widths (d_model "
    f"{study}) the loss at D={plan.max_budget:,} differs by {decision.n_spread:.3f} nats, "
    f"against {decision.d_spread:.3f} across D at fixed N (ratio {decision.ratio:.2f}; at "
    f"least {pilot_lib.MIN_RATIO:.2f} needed for a trend in N to be visible)."
  )
  if decision.suggestion and decision.suggestion != tuple(plan.widths):
    text += (
      " Widths with the most leverage: d_model "
      + ", ".join(str(d_models[w]) for w in decision.suggestion)
      + f" (--widths={','.join(f'{w:g}' for w in decision.suggestion)})."
    )
  return text


def refusal(decision: pilot_lib.Decision, rows: list[pilot_lib.Width], plan: Plan) -> str:
  """The one line the study exits with when the widths have no leverage on N."""
  d_models = {r.width: r.d_model for r in rows}
  study = ", ".join(str(d_models[w]) for w in plan.widths)
  instead = (
    f"use --widths={','.join(f'{w:g}' for w in decision.suggestion)} (d_model "
    + ", ".join(str(d_models[w]) for w in decision.suggestion)
    + ") instead"
    if decision.suggestion
    else "no measured widths do better: try smaller widths "
    "(--widths) or a larger --config.data_budget_tokens"
  )
  return (
    f"widths d_model {study} differ by {decision.n_spread:.3f} nats at D="
    f"{plan.max_budget:,}, under a third of the {decision.d_spread:.3f} across D: model "
    f"size has no leverage on the CBS there; {instead}"
  )


def candidate_widths(plan: Plan) -> tuple[float, ...]:
  return tuple(sorted(set(plan.widths) | set(plan.pilot_widths)))
