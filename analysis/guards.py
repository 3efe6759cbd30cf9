"""Checks of a CBS measurement against the classic sweep mistakes, each with what to run next.

f(B) is a minimum over learning rates: when the best learning rate of a batch size is the smallest or
largest one swept, the minimum was not found and f(B) is overestimated, which biases the fit. A fit
with fewer than two batch sizes on either side of its CBS, or a CBS outside the swept batch sizes,
extrapolates. `guards` reports these per group (stored in results.json and at the top of the
report); `lr_extensions` turns the edge cases into the runs that move the best learning rate inside
its grid, for sweeps that extend their grid by themselves.

`b_opt_token_overhead`: Definition 1 anchors linear scaling at B_opt, which must itself be in the
linear regime. With steps = a + b/B, B_opt needs (a B_opt + b) / b = 1 + B_opt / B_noise times the
tokens of the small-batch limit; above MAX_TOKEN_OVERHEAD the target is not the best loss reachable
at D and the constant (1+t) B_opt dominates the CBS, compressing its exponents. The two checks of
the linear regime (`linear_regime`) give both a group's warnings and `linear_regime_flags`, the
groups an answer's sensitivity check leaves out.
"""

import math
from collections.abc import Collection
from typing import NamedTuple

MIN_SIDE = 2  # batch sizes wanted above the CBS
MIN_BELOW = 3  # batch sizes wanted below the CBS: they carry the linear-scaling regime
MAX_TOKEN_OVERHEAD = 1.15  # B_opt's tokens to target over the small-batch limit's, at most


class LinearRegime(NamedTuple):
  """Which of the two checks that Definition 1's CBS rests on enough of the linear regime fail."""

  few_below: bool  # fewer than MIN_BELOW batch sizes below the CBS
  costly_b_opt: bool  # B_opt needs more than MAX_TOKEN_OVERHEAD x the small-batch limit's tokens


def linear_regime(points_below: int, overhead: float) -> LinearRegime:
  """The linear-regime checks of a group with `points_below` batch sizes below its CBS and B_opt's
  token overhead `overhead` (a nan overhead fails)."""
  return LinearRegime(points_below < MIN_BELOW, not overhead <= MAX_TOKEN_OVERHEAD)


def _round(lr: float) -> float:
  """Three significant digits, as sweep run names write learning rates."""
  return float(f"{lr:.3g}")


def _batch_guard(batch: int, rows: list[dict], default_ratio: float) -> dict:
  """Where the best learning rate of one batch size sits in its grid, and the next one to try."""
  lrs = sorted({row["lr"] for row in rows})
  reached = [row for row in rows if row["reached"]]
  entry = {
    "batch_size": batch,
    "lrs": lrs,
    "best_lr": None,
    "best_run": None,
    "best_lr_at_grid_edge": False,
    "next_lrs": [],
    "unreached": [row["run"] for row in rows if not row["reached"] and not row["capped"]],
    "capped": [row["run"] for row in rows if row["capped"]],
  }
  if not reached:
    return entry
  best = min(reached, key=lambda row: row["steps"])
  entry.update(
    best_lr=best["lr"], best_run=best["run"], next_lrs=beyond_edge(lrs, best["lr"], default_ratio)
  )
  entry["best_lr_at_grid_edge"] = bool(entry["next_lrs"])
  return entry


def beyond_edge(lrs: list[float], best_lr: float, default_ratio: float = 2.0) -> list[float]:
  """The learning rates one step past each edge of the sorted grid `lrs` that `best_lr` sits on,
  by the grid's own ratio there (`default_ratio` with one rate, which is both edges); [] when the
  best is interior. Three significant digits, as run names write them."""
  low = default_ratio if len(lrs) < 2 else lrs[1] / lrs[0]
  high = default_ratio if len(lrs) < 2 else lrs[-1] / lrs[-2]
  out = []
  if best_lr == lrs[0]:
    out.append(_round(lrs[0] / low))
  if best_lr == lrs[-1]:
    out.append(_round(lrs[-1] * high))
  return out


def _next_batch(batches: list[int], up: bool) -> int:
  """One step beyond the swept batch sizes, by the ratio of the outermost two (2 with one)."""
  if up:
    ratio = batches[-1] / batches[-2] if len(batches) > 1 else 2
    return int(round(batches[-1] * ratio))
  ratio = batches[1] / batches[0] if len(batches) > 1 else 2
  return max(1, int(round(batches[0] / ratio)))


def _warnings(group: dict, per_batch: list[dict], measured: list[int]) -> list[str]:
  out = []
  for entry in per_batch:
    b, lrs = entry["batch_size"], entry["lrs"]
    grid = ", ".join(f"{lr:g}" for lr in lrs)
    if entry["best_lr"] is None:
      out.append(
        f"batch {b}: no run reached the target ({len(entry['capped'])} capped, "
        f"{len(entry['unreached'])} ended before it; lr {grid}), so f({b}) is missing "
        "from the fit: train its best learning rate longer"
      )
    elif len(lrs) == 1:
      out.append(
        f"batch {b}: one learning rate swept ({grid}), so f({b}) may not be its minimum: "
        f"add lr {' and '.join(f'{lr:g}' for lr in entry['next_lrs'])}"
      )
    elif entry["best_lr_at_grid_edge"]:
      side = "smallest" if entry["best_lr"] == lrs[0] else "largest"
      out.append(
        f"batch {b}: best lr {entry['best_lr']:g} is the {side} swept ({grid}), so f({b}) "
        f"is overestimated: add lr {entry['next_lrs'][0]:g}"
      )
  if "cbs" not in group:
    reason = group.get("fit_error", "no batch size reached the target")
    out.append(f"no CBS: {reason}")
    return out
  cbs = group["cbs"]
  below = [b for b in measured if b < cbs]
  above = [b for b in measured if b > cbs]
  if not measured[0] <= cbs <= measured[-1]:
    out.append(
      f"the CBS {cbs:.1f} lies above the largest batch size that reached the target "
      f"({measured[-1]}), so it is extrapolated: add batch {_next_batch(measured, True)}"
    )
  elif len(above) < MIN_SIDE:
    out.append(
      f"{len(above)} batch size(s) above the CBS {cbs:.1f} ({above}): add batch "
      f"{_next_batch(measured, True)}"
    )
  overhead = token_overhead(group)
  regime = linear_regime(len(below), overhead)
  if regime.few_below:
    fix = (
      f"add batch {_next_batch(measured, False)}"
      if measured[0] > 1
      else "batch 1 is the smallest: use shorter sequences (the CBS is then more sequences)"
    )
    out.append(
      f"{len(below)} batch size(s) below the CBS {cbs:.1f} ({below}), {MIN_BELOW} wanted: {fix}"
    )
  if regime.costly_b_opt:
    out.append(
      f"b_opt_token_overhead: B_opt={group['b_opt']} needs {overhead:.2f}x the tokens "
      f"of the small-batch limit (at most {MAX_TOKEN_OVERHEAD}): start the batch sizes "
      "lower (or use shorter sequences) and take a smaller B_opt"
    )
  return out


def token_overhead(group: dict) -> float:
  """Tokens to target at B_opt over the small-batch limit's: 1 + B_opt / B_noise (inf if the fit
  is flat, nan without a fit)."""
  if "b_noise" not in group:
    return math.nan
  return 1 + group["b_opt"] / group["b_noise"] if group["b_noise"] > 0 else math.inf


def guards(group: dict, default_ratio: float = 2.0) -> dict:
  """The checks of one measured group (`analysis.measure.fit_group`'s result).

  Per batch size: the swept learning rates, the best one, `best_lr_at_grid_edge` and the next
  learning rates beyond the edge (by the grid's own ratio; `default_ratio` with one learning rate),
  its unreached and capped runs. Per group: batch sizes measured below and above the fitted CBS,
  whether the CBS lies inside them, and one-line `warnings` saying what to run next.
  """
  by_batch: dict[int, list[dict]] = {}
  for row in group["runs"]:
    by_batch.setdefault(row["batch_size"], []).append(row)
  per_batch = [_batch_guard(b, by_batch[b], default_ratio) for b in sorted(by_batch)]
  measured = sorted(row["batch_size"] for row in group["best"])
  cbs = group.get("cbs", math.nan)
  return {
    "batches": per_batch,
    "points_below_cbs": sum(b < cbs for b in measured),
    "points_above_cbs": sum(b > cbs for b in measured),
    "cbs_in_range": bool(measured) and measured[0] <= cbs <= measured[-1],
    "b_opt_token_overhead": token_overhead(group),
    "unreached": [r for e in per_batch for r in e["unreached"]],
    "capped": [r for e in per_batch for r in e["capped"]],
    "warnings": _warnings(group, per_batch, measured),
  }


def lr_extensions(
  groups: list[dict], max_lrs: int, batches: Collection[int] | None = None
) -> list[tuple[int, float]]:
  """The (batch size, learning rate) runs that move every edge best learning rate inward.

  For each group and batch size (only those in `batches`, if given) whose best learning rate is the
  smallest or largest swept, the next one beyond that edge by the grid's ratio, rounded to three
  significant digits; none for a batch size that already has `max_lrs` learning rates (the limit
  of an automatic extension). Sorted and without duplicates (groups at several data budgets share
  runs). Empty once every best learning rate is interior or at the limit, so a sweep can loop
  `while extra := lr_extensions(measured groups, max_lrs): train extra; measure again`.
  """
  wanted = set()
  for group in groups:
    for entry in (group.get("guards") or guards(group))["batches"]:
      if batches is not None and entry["batch_size"] not in batches:
        continue
      if len(entry["lrs"]) < max_lrs:
        wanted.update((entry["batch_size"], lr) for lr in entry["next_lrs"])
  return sorted(wanted)


def linear_regime_flags(groups: list[dict]) -> dict[tuple[float, float], str]:
  """(N, D) -> why, for the measured groups whose Definition-1 CBS rests on too little of the
  linear regime (`linear_regime`, from their `guards`)."""
  out = {}
  for g in groups:
    if "cbs" not in g:
      continue
    below, overhead = g["guards"]["points_below_cbs"], g["guards"]["b_opt_token_overhead"]
    regime = linear_regime(below, overhead)
    why = []
    if regime.few_below:
      why.append(f"{below} batch sizes below its CBS")
    if regime.costly_b_opt:
      why.append(f"B_opt needs {overhead:.2f}x the small-batch tokens")
    if why:
      out[(float(g["n_params"]), float(g["tokens"]))] = "; ".join(why)
  return out
