"""From runs to the CBS table: target loss, steps to target, minimum over the sweep, fits.

Groups share a model and data budget. For each group: the target is the best loss the reference
runs (batch B_opt) reach after D tokens, unless given (lowest over learning rates of the mean over
seeds); each run's steps to the target is its earliest interpolated crossing; f(B) is the lowest
over learning rates at batch B of the mean over seeds. Runs that never reach the target are kept in
the table with `reached=False`. Seeds are averaged, never minimised over: a minimum over seeds
would reward luck.
"""

import collections
import math

import numpy as np

from analysis import fits
from analysis import guards
from analysis import runs as runs_lib


def mean_over_seeds(values: list[tuple[float, float]]) -> dict[float, float]:
  """{lr: mean value over its seeds} from (lr, value) pairs; nan where any seed has nan (a seed
  that did not get there: the rate cannot be trusted at this point)."""
  by_lr: dict[float, list[float]] = collections.defaultdict(list)
  for lr, value in values:
    by_lr[lr].append(value)
  return {lr: float(np.mean(v)) for lr, v in by_lr.items()}


def target_loss(reference: list[runs_lib.Run], budget: float, metric: str = "best") -> float:
  """The best loss the reference runs (batch B_opt) reach after D tokens: the lowest over learning
  rates of the mean over seeds; nan if none got there."""
  means = mean_over_seeds(
    [(r.config["optimizer"]["lr"], runs_lib.loss_after(r, budget, metric)) for r in reference]
  )
  finite = [v for v in means.values() if not math.isnan(v)]
  return min(finite) if finite else math.nan


def lowest_loss(reference: list[runs_lib.Run], budget: float, metric: str = "best") -> float:
  """The lowest target a bootstrap of the reference runs' seeds can draw at D: per learning rate
  the best seed's loss, its deviation from the mean over K seeds scaled by sqrt(K/(K-1)) as
  `analysis.resample` does; runs that stop here have crossed every target the bootstrap uses."""
  by_lr: dict[float, list[float]] = collections.defaultdict(list)
  for r in reference:
    loss = runs_lib.loss_after(r, budget, metric)
    if not math.isnan(loss):
      by_lr[r.config["optimizer"]["lr"]].append(loss)
  lowest = []
  for losses in by_lr.values():
    k, mean = len(losses), float(np.mean(losses))
    scale = math.sqrt(k / (k - 1)) if k > 1 else 1.0
    lowest.append(math.exp(math.log(mean) + scale * (math.log(min(losses)) - math.log(mean))))
  return min(lowest) if lowest else math.nan


def step_cap(
  done: list[runs_lib.Run], batch: int, target: float, metric: str = "best", slack: float = 1.0
) -> float:
  """Steps after which a run at `batch` can no longer be f(batch), the minimum over its sweep.

  `slack` x the fewest steps to the target of a finished run at this batch, if one got there (with
  several seeds a slower seed of the best rate must still get there: slack > 1); else 1.1 x slack
  x that of the largest smaller batch (f does not grow with B; 10% for noise); else inf.
  """
  best: dict[int, float] = {}
  for r in done:
    steps, _ = runs_lib.best_crossing(r, target, metric)
    if not math.isnan(steps):
      best[r.batch_size] = min(steps, best.get(r.batch_size, math.inf))
  if batch in best:
    return slack * best[batch]
  smaller = [b for b in best if b < batch]
  return 1.1 * slack * best[max(smaller)] if smaller else math.inf


def best_points(rows: list[dict]) -> list[dict]:
  """f(B) per batch size: the lowest over learning rates of the mean steps over seeds (a rate
  counts only where every seed reached the target). Each point names its rate, its first run and
  the steps of each seed."""
  cells: dict[tuple[int, float], list[dict]] = collections.defaultdict(list)
  for row in rows:
    cells[(row["batch_size"], row["lr"])].append(row)
  best: dict[int, dict] = {}
  for (batch, _lr), members in cells.items():
    if not all(m["reached"] for m in members):
      continue
    point = {
      **members[0],
      "steps": float(np.mean([m["steps"] for m in members])),
      "seed_steps": [m["steps"] for m in members],
    }
    point["tokens"] = point["steps"] * batch * members[0]["seq_len"]
    if batch not in best or point["steps"] < best[batch]["steps"]:
      best[batch] = point
  return [best[b] for b in sorted(best)]


def measure_group(
  group: list[runs_lib.Run], b_opt: int, metric: str, target: float | None = None
) -> dict:
  """The measurement of one group; see the module docstring."""
  constant = [r for r in group if not r.adaptive]
  budget = group[0].data_budget
  if target is None:
    reference = [r for r in constant if r.batch_size == b_opt]
    if not reference:
      sizes = sorted({r.batch_size for r in constant})
      raise ValueError(
        f"group {runs_lib.group_name(group[0])} has no run at --b_opt={b_opt} "
        f"(batch sizes: {sizes}); pass --b_opt or --target"
      )
    target = target_loss(reference, budget, metric)
    if math.isnan(target):
      raise ValueError(
        f"group {runs_lib.group_name(group[0])}: no reference run at batch {b_opt} "
        f"has evaluated up to D={budget:,} tokens yet"
      )
  rows = []
  for r in sorted(constant, key=lambda r: (r.batch_size, r.name)):
    steps, key = runs_lib.best_crossing(r, target, metric, "step")
    rows.append(
      {
        "run": r.name,
        "batch_size": r.batch_size,
        "lr": r.config["optimizer"]["lr"],
        "seed": r.seed,
        "seq_len": r.seq_len,
        "steps": steps,
        "tokens": steps * r.batch_size * r.seq_len,
        "metric": key,
        "reached": not math.isnan(steps),
        "finished": r.finished,
        # a run told to stop at the target that finished without it ran out of tokens:
        # the study caps runs that can no longer be the minimum of their batch size
        "capped": (
          r.finished and math.isnan(steps) and r.config.get("train", {}).get("stop_loss", 0) > 0
        ),
        "final_step": r.evals[-1]["step"] if r.evals else 0,
      }
    )
  floor = group[0].floors.get("eval_bayes_loss", math.nan)
  result = {
    "name": runs_lib.group_name(group[0]),
    "n_params": group[0].n_params,
    "tokens": budget,
    "seq_len": group[0].seq_len,
    "target": target,
    "b_opt": b_opt,
    "bayes_floor": floor,
    "target_above_floor": target - floor,
    "seeds": len({r.seed for r in constant}),
    "runs": rows,
    "best": best_points(rows),
    "unreached": [row["run"] for row in rows if not row["reached"]],
  }
  return result


def fit_group(result: dict, threshold: float, samples: int = 1000, seed: int = 0) -> dict:
  """Adds the a + b/B fit, the CBS (from the fit and from the raw points) and the fitted CBS's
  bootstrap interval `cbs_ci` (resampling the points; nan without samples)."""
  batch = [row["batch_size"] for row in result["best"]]
  steps = [row["steps"] for row in result["best"]]
  try:
    fit = fits.fit_steps(batch, steps)
  except ValueError as e:
    result["fit_error"] = str(e)
    return result
  b_opt = result["b_opt"]
  result.update(
    a=fit.a,
    b=fit.b,
    b_noise=fit.b_noise,
    rmse_log=fit.rmse_log,
    cbs=fits.critical_batch_size(fit, b_opt, threshold),
    cbs_ci=list(fits.bootstrap_cbs(batch, steps, b_opt, threshold, samples, seed)),
    cbs_raw=raw_critical_batch_size(batch, steps, b_opt, threshold),
  )
  return result


def raw_critical_batch_size(batch_sizes, steps, b_opt: int, threshold: float) -> float:
  """Definition 1 on the measured points: the largest B >= B_opt with f(B) <= (1+t) f(B_opt) B_opt/B.

  nan when B_opt itself was not reached. Reported next to the fitted CBS as a check of the fit.
  """
  points = dict(zip(batch_sizes, steps))
  if b_opt not in points:
    return math.nan
  ok = [
    b for b, s in points.items() if b >= b_opt and s <= (1 + threshold) * points[b_opt] * b_opt / b
  ]
  return float(max(ok))


def groups(all_runs: list[runs_lib.Run]) -> list[list[runs_lib.Run]]:
  """Runs of one CBS measurement each (`runs_lib.group_key`: model, N, D, sequence length), by N
  and D; groups of adaptive runs only are left out (they have no steps to target)."""
  by_key = collections.defaultdict(list)
  for r in all_runs:
    by_key[runs_lib.group_key(r)].append(r)
  return [
    by_key[k]
    for k in sorted(by_key, key=lambda k: (k[1], k[2], k[3], k[0]))
    if not all(r.adaptive for r in by_key[k])
  ]


def measure(
  all_runs: list[runs_lib.Run],
  b_opt: int = 256,
  threshold: float = 0.2,
  metric: str = "best",
  target: float | None = None,
  samples: int = 1000,
) -> list[dict]:
  """One fitted result per group (`groups`), in the same order, each with its `guards`."""
  results = []
  for group in groups(all_runs):
    result = fit_group(measure_group(group, b_opt, metric, target), threshold, samples)
    result["guards"] = guards.guards(result)
    results.append(result)
  names = collections.Counter(r["name"] for r in results)
  for r in results:  # groups of one N and D that differ in sequence length (or model shape)
    if names[r["name"]] > 1:
      r["name"] += f",L={r['seq_len']}"
  return results


def scaling(
  results: list[dict], b_opt: int, threshold: float, samples: int = 1000, seed: int = 0
) -> dict:
  """CBS = d N^beta over groups differing in N, and CBS = d D^gamma over groups differing in D.

  A one-variable law is only fitted while the other variable is fixed: across groups that vary
  both, it would mix the two effects (`analysis.scaling_laws` fits them jointly).
  """
  usable = [r for r in results if "cbs" in r]
  out = {}
  for key, other in (("n_params", "tokens"), ("tokens", "n_params")):
    if len({r[key] for r in usable}) < 2 or len({r[other] for r in usable}) > 1:
      continue
    data = [
      {
        key: r[key],
        "batch_sizes": [b["batch_size"] for b in r["best"]],
        "steps": [b["steps"] for b in r["best"]],
      }
      for r in usable
    ]
    law = fits.bootstrap_scaling(data, key, b_opt, threshold, samples, seed)
    out[key] = {
      "d": law.d,
      "exponent": law.exponent,
      "exponent_ci": list(law.ci),
      "d_ci": list(law.d_ci),
      "points": [[r[key], r["cbs"]] for r in usable],
    }
  return out


def adaptive_table(all_runs: list[runs_lib.Run], metric: str, fractions=(0.25, 0.5, 1.0)) -> dict:
  """Loss of every run at equal token counts, and the steps each took, for schedule comparisons.

  Only built when some run grows its batch; token points are fractions of the shortest run.
  """
  if not any(r.adaptive for r in all_runs):
    return {}
  runs = [r for r in all_runs if r.evals]
  horizon = min(r.evals[-1]["tokens"] for r in runs)
  points = [int(f * horizon) for f in fractions]
  rows = []
  for r in sorted(runs, key=lambda r: (r.adaptive, r.batch_size, r.name)):
    key, _ = runs_lib.best_curve(r, metric)
    steps_at = [
      float(np.interp(t, [x["tokens"] for x in r.train], [x["step"] for x in r.train]))
      for t in points
    ]
    rows.append(
      {
        "run": r.name,
        "schedule": r.config["batch"]["schedule"],
        "initial_batch": r.batch_size,
        "final_batch": r.train[-1]["batch_size"] if r.train else r.batch_size,
        "losses": [runs_lib.loss_at(r.evals, key, t) for t in points],
        "steps": steps_at,
      }
    )
  return {"tokens": points, "rows": rows}
