"""Measures an adaptive-batch study's runs, seed by seed, for Lau et al.'s claim.

Each arm's rate is the one with the lowest seed-mean loss at D tokens (equal tokens). At a ladder
of target losses, from the worst tuned arm's final loss (every arm reaches it) to the best arm's
(only it may), each seed's steps to the target are read from its evals. The best arm of a kind
(constant, ramp, adaptive) at a target is the one with the fewest seed-mean steps; the adaptive
one wins "beyond seed noise" only when every seed of it needs fewer steps than every seed of the
best constant batch and of the best ramp (with two seeds: the ranges do not overlap). The claim as
the paper states it holds at a target when that happens.
"""

import math
from typing import NamedTuple

import numpy as np

from analysis import runs as runs_lib

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
