"""The adaptive study's report: the answer to Lau et al.'s claim (a sentence that follows from
the per-target verdicts), the tuned arms, the norm test's eta sweep and the learning-rate grids, as
report.md, report.html and results.json. It formats and writes what `studies.adaptive_measure`
measured; it measures nothing itself.
"""

import json
import math
from typing import NamedTuple

import numpy as np

from analysis import report as report_lib
from studies import adaptive_measure as measure
from studies import adaptive_plots
from studies.adaptive_measure import Measured
from studies.adaptive_measure import Tuned


class Design(NamedTuple):
  """What the study held fixed, as the report states it."""

  start: int  # first batch of the growing arms
  cap: int  # their largest
  tokens: int  # D
  eta: float  # the norm test's tolerance while its rate was tuned
  command: str


def _steps_text(entry: dict) -> str:
  steps = entry["steps"]
  if not steps:
    return "never"
  spread = f" [{min(steps):.0f}, {max(steps):.0f}]" if len(steps) > 1 else ""
  return f"{entry['arm']}: {np.mean(steps):.0f}{spread}"


def answer(rows: list[dict], seeds: int, tokens: int) -> dict:
  """The sentence answering the claim as stated, following from the per-target verdicts."""
  fewer = [r for r in rows if r["verdict"] == "fewer"]
  more = [r for r in rows if r["verdict"] == "more"]
  if not rows:
    return {"holds": False, "sentence": "No arm reached a common loss: the claim was not tested."}
  if len(fewer) == len(rows):
    summary = "holds here at every target loss"
  elif not fewer:
    summary = (
      "does not hold here: at no target loss does the best adaptive schedule need fewer "
      "steps than both the best constant batch and the best ramp"
      + (" beyond seed noise" if seeds > 1 else "")
    )
  else:
    losses = ", ".join(f"{r['target']:.3f}" for r in fewer)
    summary = f"holds here only at loss {losses} of the {len(rows)} target losses"
  noise = (
    f"{seeds} seeds each, ranges in brackets"
    if seeds > 1
    else "one seed: no seed noise measured, so no difference is beyond it"
  )
  detail = "; ".join(
    f"to {r['target']:.3f}: {_steps_text(r['adaptive'])} vs {_steps_text(r['constant'])} and "
    f"{_steps_text(r['ramp'])} ({r['verdict']})"
    for r in rows
  )
  sentence = (
    f"Lau et al.'s claim (at equal tokens the best adaptive batch schedule reaches a loss "
    f"in fewer steps than the best constant batch and the best ramp) {summary} "
    f"({tokens:,} tokens per run, every arm's learning rate tuned, {noise}). Steps "
    f"{detail}."
  )
  return {
    "holds": len(fewer) == len(rows),
    "fewer_at": [r["target"] for r in fewer],
    "more_at": [r["target"] for r in more],
    "sentence": sentence,
  }


def _range(values) -> str:
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return "-"
  if len(values) == 1:
    return f"{values[0]:.4g}"
  return f"{np.mean(values):.4g} [{min(values):.4g}, {max(values):.4g}]"


def arm_rows(arms: list[Tuned], design: Design, goals: list[float]) -> list[dict]:
  """The tuned table: rate, loss and steps at D, growth, steps to each target, per seed."""
  rows = []
  for a in arms:
    grown = [measure.growth(r, design.cap, design.tokens) for r in a.runs]
    rows.append(
      {
        "arm": a.label,
        "kind": a.kind,
        "lr": a.lr,
        "lr_on_edge": a.on_edge,
        "rates": list(a.rates),
        "losses": list(a.losses),
        "steps": [measure.steps_at(r, design.tokens) for r in a.runs],
        "final_batch": [g["final_batch"] for g in grown],
        "cap_step": [g["cap_step"] for g in grown],
        "share_at_cap": [g["share_at_cap"] for g in grown],
        "steps_to": [measure.steps_to(a, t) for t in goals],
      }
    )
  return rows


def lr_rows(measured: list[Measured], tokens: int) -> list[list]:
  rows = []
  for label in dict.fromkeys(m.label for m in measured):
    for lr in sorted({m.lr for m in measured if m.label == label}):
      losses = [
        measure.final_loss(m.run, tokens)
        for m in sorted(measured, key=lambda m: m.seed)
        if m.label == label and m.lr == lr
      ]
      rows.append([label, f"{lr:.3g}", _range(losses)])
  return rows


def answer_section(result: dict, rows: list[dict], frontier: str) -> list:
  """The answer, the best arm of each kind at every target loss, and the frontier figure."""
  return [
    report_lib.heading("Answer: does an adaptive batch reach a loss in fewer steps?"),
    report_lib.paragraph(result["sentence"]),
    report_lib.table(
      [
        "target loss",
        "best adaptive: steps",
        "best constant: steps",
        "best ramp: steps",
        "adaptive needs",
      ],
      [
        [
          f"{r['target']:.4f}",
          _steps_text(r["adaptive"]),
          _steps_text(r["constant"]),
          _steps_text(r["ramp"]),
          r["verdict"],
        ]
        for r in rows
      ],
    ),
    report_lib.paragraph(
      "Steps are seed means with the [lowest, highest] seed in brackets. 'fewer' / 'more': "
      "every seed of the best adaptive arm needs fewer / more steps than every seed of the "
      "best constant batch and the best ramp (the seed ranges are apart); otherwise the "
      "difference is within seed noise. Targets run from the highest loss every seed of "
      "every arm reaches by D to the lowest that every seed of some arm reaches."
    ),
    report_lib.image(
      frontier,
      "Eval loss against steps (left) and tokens (right) of every "
      "tuned arm, one line per seed; the target losses dotted",
    ),
  ]


def tuned_arms_section(table: list[dict], design: Design, goals: list[float]) -> list:
  """Every arm at its tuned rate: loss and steps at D, growth, steps to each target."""
  return [
    report_lib.heading("Tuned arms"),
    report_lib.table(
      [
        "arm",
        "rate",
        "loss at D",
        "steps at D",
        "last batch",
        "step the cap was reached",
        "share of D at the cap",
        *(f"steps to {t:.4f}" for t in goals),
      ],
      [
        [
          r["arm"],
          f"{r['lr']:.3g}" + (" (grid edge)" if r["lr_on_edge"] else ""),
          _range(r["losses"]),
          _range(r["steps"]),
          _range(r["final_batch"]),
          _range(r["cap_step"]),
          _range(r["share_at_cap"]),
          *(_range(s) for s in r["steps_to"]),
        ]
        for r in table
      ],
    ),
    report_lib.paragraph(
      f"{design.tokens:,} tokens per run; growing arms start at {design.start} and may grow "
      f"to {design.cap} ({design.cap // design.start}x), test every step, keep one learning "
      "rate (Lau et al.'s protocol) and round sizes up to powers of two. The rate of each "
      "arm is the one of its grid with the lowest seed-mean loss at D; 'grid edge' marks a "
      f"best rate at the grid's edge. The norm test's other tolerances (eta sweep) run at "
      f"the rate tuned for eta {design.eta:g}."
    ),
  ]


def eta_sweep_section(table: list[dict], batches: str) -> list:
  """The norm test's arms (its eta sweep): when each reached the cap, and the batch figure."""
  sweep = [r for r in table if r["arm"].startswith("norm test")]
  return [
    report_lib.heading("Eta sweep of the norm test", 3),
    report_lib.table(
      [
        "arm",
        "step the cap was reached",
        "share of D at the cap",
        "last batch",
        "loss at D",
        "steps at D",
      ],
      [
        [
          r["arm"],
          _range(r["cap_step"]),
          _range(r["share_at_cap"]),
          _range(r["final_batch"]),
          _range(r["losses"]),
          _range(r["steps"]),
        ]
        for r in sweep
      ],
    ),
    report_lib.image(batches, "Batch size against tokens of every tuned arm (first seed)"),
  ]


def lr_grid_section(measured: list[Measured], tokens: int) -> list:
  """Every arm's learning-rate grid with the loss at D of each rate."""
  return [
    report_lib.heading("Learning-rate grids", 3),
    report_lib.table(["arm", "rate", "loss at D (seed mean [range])"], lr_rows(measured, tokens)),
  ]


def write(measured: list[Measured], design: Design, out: str) -> dict:
  """report.md, report.html and results.json under `out`; returns the results."""
  arms = list(measure.tuned(measured, design.tokens).values())
  seeds = len({m.seed for m in measured})
  goals = measure.targets(arms)
  rows = [measure.compare(arms, t) for t in goals]
  result = answer(rows, seeds, design.tokens)
  table = arm_rows(arms, design, goals)
  frontier = adaptive_plots.frontier(arms, goals, f"{out}/frontier.png")
  batches = adaptive_plots.batch_sizes(arms, f"{out}/batch_sizes.png")
  blocks = [
    *answer_section(result, rows, frontier),
    *tuned_arms_section(table, design, goals),
    *eta_sweep_section(table, batches),
    *lr_grid_section(measured, design.tokens),
  ]
  results = {
    "command": design.command,
    "design": design._asdict(),
    "answer": result,
    "comparisons": rows,
    "schedules": table,
    "frontier": {"figure": frontier, "sentence": result["sentence"]},
  }
  report_lib.write(blocks, out, "Adaptive batch-size study")
  with open(f"{out}/results.json", "w") as f:
    json.dump(results, f, indent=2, default=float)
  print(f"report: {out}/report.html\n        {out}/report.md")
  return results
