"""Measures an adaptive-batch study and answers Lau et al.'s claim from seed-resolved numbers.

Each arm's rate is the one with the lowest seed-mean loss at D tokens (equal tokens). At a ladder
of target losses, from the worst tuned arm's final loss (every arm reaches it) to the best arm's
(only it may), each seed's steps to the target are read from its evals. The best arm of a kind
(constant, ramp, adaptive) at a target is the one with the fewest seed-mean steps; the adaptive
one wins "beyond seed noise" only when every seed of it needs fewer steps than every seed of the
best constant batch and of the best ramp (with two seeds: the ranges do not overlap). The claim as
the paper states it holds at a target when that happens.
"""

import json
import math
from typing import NamedTuple

import numpy as np

from analysis import report as report_lib
from analysis import runs as runs_lib
from studies import adaptive_plots

METRIC = "best"  # raw or EWA weights, whichever is lower (EWA decay is a tuned hyper-parameter)
TARGETS = 4
KINDS = ("adaptive", "constant", "ramp")


class Measured(NamedTuple):
  """One trained run and what the study varied to make it."""

  label: str  # the arm
  kind: str  # constant | ramp | adaptive
  lr: float
  seed: int
  run: runs_lib.Run


class Design(NamedTuple):
  start: int  # first batch of the growing arms
  cap: int  # their largest
  tokens: int  # D
  eta: float  # the norm test's tolerance while its rate was tuned
  command: str


class Tuned(NamedTuple):
  """An arm at its best rate: one entry per seed."""

  label: str
  kind: str
  lr: float
  rates: tuple[float, ...]  # the grid it was tuned over
  losses: tuple[float, ...]  # loss at D per seed
  runs: tuple[runs_lib.Run, ...]

  @property
  def on_edge(self) -> bool:
    return len(self.rates) > 1 and self.lr in (self.rates[0], self.rates[-1])


def final_loss(run: runs_lib.Run, tokens: int) -> float:
  """Loss after `tokens` (nan if the run failed before)."""
  return runs_lib.loss_after(run, tokens, METRIC) if run.evals else math.nan


def _mean(values) -> float:
  """Mean over seeds; nan if any seed is missing (a failed seed is not averaged away)."""
  values = list(values)
  return float(np.mean(values)) if values and not any(math.isnan(v) for v in values) else math.nan


def tuned(measured: list[Measured], tokens: int) -> dict[str, Tuned]:
  """Each arm at the rate with the lowest seed-mean loss at D (in the order arms first appear)."""
  out = {}
  for label in dict.fromkeys(m.label for m in measured):
    mine = [m for m in measured if m.label == label]
    rates = tuple(sorted({m.lr for m in mine}))
    scores = {lr: _mean(final_loss(m.run, tokens) for m in mine if m.lr == lr) for lr in rates}
    scored = [lr for lr in rates if not math.isnan(scores[lr])]
    lr = min(scored, key=scores.get) if scored else rates[0]
    best = sorted((m for m in mine if m.lr == lr), key=lambda m: m.seed)
    out[label] = Tuned(
      label,
      mine[0].kind,
      lr,
      rates,
      tuple(final_loss(m.run, tokens) for m in best),
      tuple(m.run for m in best),
    )
  return out


def targets(arms: list[Tuned], count: int = TARGETS) -> list[float]:
  """From the highest loss every seed of every arm reaches by D to the lowest that every seed of
  some arm reaches, evenly spaced."""
  worst = [max(a.losses) for a in arms if not math.isnan(_mean(a.losses))]
  if not worst:
    return []
  return [float(v) for v in np.linspace(max(worst), min(worst), count)]


def steps_to(arm: Tuned, target: float) -> list[float]:
  """Each seed's first step at the target loss (nan: not reached within D)."""
  return [runs_lib.best_crossing(r, target, METRIC)[0] if r.evals else math.nan for r in arm.runs]


def _fewest(arms: list[Tuned], target: float) -> tuple[Tuned | None, list[float]]:
  """The arm whose seeds reach `target` in the fewest mean steps (None if none reaches)."""
  reached = [(_mean(steps_to(a, target)), a) for a in arms]
  reached = [(s, a) for s, a in reached if not math.isnan(s)]
  if not reached:
    return None, []
  _, arm = min(reached, key=lambda sa: sa[0])
  return arm, steps_to(arm, target)


def verdict(adaptive: list[float], others: list[list[float]]) -> str:
  """fewer / more (beyond seed noise: the seed ranges are apart) or within seed noise; an arm
  that never reaches the target ([]) counts as needing more steps than any that does."""
  if not adaptive:
    return "more" if any(others) else "within seed noise"
  beaten = [not o or max(adaptive) < min(o) for o in others]
  behind = [bool(o) and min(adaptive) > max(o) for o in others]
  if all(beaten):
    return "fewer"
  return "more" if any(behind) else "within seed noise"


def compare(arms: list[Tuned], target: float) -> dict:
  """The best arm of each kind at one target, its steps per seed, and the verdict."""
  row = {"target": target}
  for kind in KINDS:
    arm, steps = _fewest([a for a in arms if a.kind == kind], target)
    row[kind] = {"arm": arm.label if arm else None, "steps": steps}
  row["verdict"] = verdict(
    row["adaptive"]["steps"], [row[k]["steps"] for k in KINDS if k != "adaptive"]
  )
  return row


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


def growth(run: runs_lib.Run, cap: int, tokens: int) -> dict:
  """Where a run's batch first reached the cap, and its last batch."""
  at_cap = next((r for r in run.train if r["batch_size"] >= cap), None)
  return {
    "final_batch": run.train[-1]["batch_size"] if run.train else math.nan,
    "cap_step": at_cap["step"] if at_cap else math.nan,
    "cap_tokens": at_cap["tokens"] if at_cap else math.nan,
    "share_at_cap": max(1 - at_cap["tokens"] / tokens, 0.0) if at_cap else 0.0,
  }


def steps_at(run: runs_lib.Run, tokens: int) -> float:
  if not run.train:
    return math.nan
  return float(np.interp(tokens, [r["tokens"] for r in run.train], [r["step"] for r in run.train]))


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
    grown = [growth(r, design.cap, design.tokens) for r in a.runs]
    rows.append(
      {
        "arm": a.label,
        "kind": a.kind,
        "lr": a.lr,
        "lr_on_edge": a.on_edge,
        "rates": list(a.rates),
        "losses": list(a.losses),
        "steps": [steps_at(r, design.tokens) for r in a.runs],
        "final_batch": [g["final_batch"] for g in grown],
        "cap_step": [g["cap_step"] for g in grown],
        "share_at_cap": [g["share_at_cap"] for g in grown],
        "steps_to": [steps_to(a, t) for t in goals],
      }
    )
  return rows


def lr_rows(measured: list[Measured], tokens: int) -> list[list]:
  rows = []
  for label in dict.fromkeys(m.label for m in measured):
    for lr in sorted({m.lr for m in measured if m.label == label}):
      losses = [
        final_loss(m.run, tokens)
        for m in sorted(measured, key=lambda m: m.seed)
        if m.label == label and m.lr == lr
      ]
      rows.append([label, f"{lr:.3g}", _range(losses)])
  return rows


def write(measured: list[Measured], design: Design, out: str) -> dict:
  """report.md, report.html and results.json under `out`; returns the results."""
  arms = list(tuned(measured, design.tokens).values())
  seeds = len({m.seed for m in measured})
  goals = targets(arms)
  rows = [compare(arms, t) for t in goals]
  result = answer(rows, seeds, design.tokens)
  table = arm_rows(arms, design, goals)
  frontier = adaptive_plots.frontier(arms, goals, f"{out}/frontier.png")
  batches = adaptive_plots.batch_sizes(arms, f"{out}/batch_sizes.png")
  sweep = [r for r in table if r["arm"].startswith("norm test")]
  blocks = [
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
    report_lib.heading("Learning-rate grids", 3),
    report_lib.table(
      ["arm", "rate", "loss at D (seed mean [range])"], lr_rows(measured, design.tokens)
    ),
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
