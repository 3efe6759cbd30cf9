"""Sections of a study's report beyond one sweep's measurement: the protocol ablation (constant LR +
EWA against cosine and WSD) and the adaptive schedules' equal-token and equal-step tables with a
plain statement of who wins where. The answer to "data or model size?" is
`analysis.answer_report`'s."""

import math

import numpy as np

from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib
from studies import cbs_plots as study_plots


def final_losses(runs: list[runs_lib.Run], tokens: int, metric: str) -> dict[int, float]:
  """The lowest loss at `tokens` per batch size over runs (learning rates): {batch: loss}."""
  best: dict[int, float] = {}
  for r in runs:
    loss = runs_lib.loss_after(r, tokens, metric)
    if not math.isnan(loss):
      best[r.batch_size] = min(loss, best.get(r.batch_size, math.inf))
  return best


def ablation(
  main_runs: list[runs_lib.Run],
  ablation_runs: list[runs_lib.Run],
  budget: int,
  target: float,
  metric: str,
) -> dict:
  """Final loss at D per batch size for each schedule, each tuned over its learning rates; the
  constant-LR runs are the main sweep's of the ablation runs' seed."""
  seeds = {r.seed for r in ablation_runs}
  schedules = {"constant + EWA": [r for r in main_runs if r.seed in seeds]}
  for name in ("cosine", "wsd"):
    schedules[name] = [r for r in ablation_runs if r.config["schedule"]["name"] == name]
  batches = sorted({r.batch_size for r in ablation_runs})
  losses = {name: final_losses(runs, budget, metric) for name, runs in schedules.items()}
  table = [
    {"batch_size": b, **{name: losses[name].get(b, math.nan) for name in losses}} for b in batches
  ]
  return {"tokens": budget, "target": target, "metric": metric, "schedules": table}


def ablation_blocks(result: dict, n_params: int) -> list:
  names = [k for k in result["schedules"][0] if k != "batch_size"] if result["schedules"] else []
  blocks = [
    report_lib.heading("Protocol ablation: constant LR + EWA vs cosine and WSD"),
    report_lib.paragraph(
      f"N = {n_params:,} non-embedding parameters, D = {result['tokens']:,} tokens. Loss "
      f"at D ({plots.loss_label(result['metric'])}), best learning rate per batch size "
      "and schedule; cosine and WSD runs are tuned for exactly D tokens, the "
      "constant-LR runs are the main sweep's (whose curves do not depend on the run "
      "length)."
    ),
  ]
  if names:
    blocks.append(
      report_lib.table(
        ["batch", *names, "constant - best other"],
        [
          [r["batch_size"], *(r[n] for n in names), r[names[0]] - min(r[n] for n in names[1:])]
          for r in result["schedules"]
        ],
      )
    )
  return blocks


def at_equal_steps(runs: list[runs_lib.Run], metric: str) -> dict:
  """Loss of every run at equal optimizer steps: from the first step at which every run has been
  evaluated, doubling up to the longest run's end (nan once a run has ended), plus `horizon`, the
  end of the run with the fewest steps, where every run has a value."""
  evaluated = [r for r in runs if r.evals]
  horizon = min(r.evals[-1]["step"] for r in evaluated)
  first = max(r.evals[0]["step"] for r in evaluated)
  longest = max(r.evals[-1]["step"] for r in evaluated)
  points = {int(horizon)}
  step = first
  while step <= longest:
    points.add(int(step))
    step *= 2
  points = sorted(points)
  rows = []
  for r in evaluated:
    key, _ = runs_lib.best_curve(r, metric)
    rows.append(
      {"run": r.name, "losses": [runs_lib.loss_at(r.evals, key, s, "step") for s in points]}
    )
  return {"steps": points, "horizon": int(horizon), "rows": rows}


def winners(labels: dict[str, str], tokens_table: dict, steps_table: dict) -> str:
  """A plain sentence: which schedule has the lowest loss at the last equal-token point and at the
  equal-step horizon (every run still training)."""

  def best(rows, index):
    finite = [r for r in rows if not math.isnan(r["losses"][index])]
    top = min(finite, key=lambda r: r["losses"][index])
    return labels.get(top["run"], top["run"]), top["losses"][index]

  tok, tok_loss = best(tokens_table["rows"], -1)
  at = steps_table["steps"].index(steps_table["horizon"])
  step, step_loss = best(steps_table["rows"], at)
  return (
    f"At equal tokens ({tokens_table['tokens'][-1]:,}) {tok} wins (loss {tok_loss:.3f}); at "
    f"equal steps ({steps_table['horizon']:,}, where the run with the fewest steps ends) {step} "
    f"wins (loss {step_loss:.3f}). Adaptive "
    "batches trade tokens for steps: they pay off where steps (wall time on many devices) "
    "are the constraint, a small constant batch where data is."
  )


def adaptive_blocks(
  runs: list[runs_lib.Run], labels: dict[str, str], tokens_table: dict, metric: str, out: str
) -> tuple[list, dict]:
  steps_table = at_equal_steps(runs, metric)
  sentence = winners(labels, tokens_table, steps_table)
  plot = study_plots.frontier(runs, labels, metric, f"{out}/frontier.png")
  name = lambda run: labels.get(run, run)
  blocks = [
    report_lib.heading("Who wins where"),
    report_lib.paragraph(sentence),
    report_lib.image(
      plot,
      f"{plots.loss_label(metric).capitalize()} against steps and "
      "against tokens: the steps / tokens trade-off frontier",
    ),
    report_lib.heading("Loss at equal tokens", 3),
    report_lib.table(
      [
        "schedule",
        *(f"{t:,} tokens" for t in tokens_table["tokens"]),
        *(f"steps @ {t:,}" for t in tokens_table["tokens"]),
      ],
      [[name(r["run"]), *r["losses"], *np.round(r["steps"], 1)] for r in tokens_table["rows"]],
    ),
    report_lib.heading("Loss at equal steps", 3),
    report_lib.paragraph("A dash: the run had ended (its tokens were spent)."),
    report_lib.table(
      ["schedule", *(f"{s:,} steps" for s in steps_table["steps"])],
      [[name(r["run"]), *r["losses"]] for r in steps_table["rows"]],
    ),
  ]
  return blocks, {"equal_steps": steps_table, "sentence": sentence}
