"""The CBS study's protocol ablation: constant LR + EWA against cosine and WSD at one (N, D), each
schedule at its best learning rate per batch size, as numbers and as a report section. The answer
to "data or model size?" is `analysis.answer_report`'s."""

import math

from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib


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
