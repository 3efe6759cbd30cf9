"""Sections of a study's report beyond one sweep's measurement: the answer to "data or model size?",
the protocol ablation (constant LR + EWA against cosine and WSD, b2 at small batches), and the
adaptive schedules' equal-token and equal-step tables with a plain statement of who wins where."""

import math

import numpy as np

from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib
from analysis import study_plots


def answer_blocks(answer: dict, groups: list[dict], out: str) -> list:
  """The report's opening: both exponents with intervals, the coupled exponent, the sentence, the
  two views of CBS against N and D."""
  a_lo, a_hi = answer["alpha_ci"]
  b_lo, b_hi = answer["beta_ci"]
  rows = [["CBS ~ D^beta at fixed N", f"{answer['beta']:.3f}", f"[{b_lo:.3f}, {b_hi:.3f}]"],
          ["CBS ~ N^alpha at fixed D", f"{answer['alpha']:.3f}", f"[{a_lo:.3f}, {a_hi:.3f}]"]]
  coupled = answer.get("coupled")
  if coupled:
    lo, hi = coupled["exponent_ci"]
    rows.append([f"CBS ~ N^gamma with D proportional to N ({len(coupled['points'])} sizes)",
                 f"{coupled['exponent']:.3f}", f"[{lo:.3f}, {hi:.3f}]"])
  plot = study_plots.cbs_slices(groups, answer, f"{out}/cbs_vs_n_and_d.png")
  return [report_lib.heading("Answer: does the CBS scale with data or with model size?"),
          report_lib.paragraph(answer["sentence"]),
          report_lib.table(["law", "exponent", "95% bootstrap interval"], rows),
          report_lib.paragraph(
              f"Joint fit log CBS = log c + alpha log N + beta log D over {answer['groups']} "
              "groups (N non-embedding parameters, D tokens), CBS from each group's fit of steps = "
              "a + b/B; intervals resample each group's points. The coupled exponent is fitted "
              "along the groups whose D/N ratio matches across model sizes."),
          report_lib.image(plot, "CBS vs N at each D (left) and vs D at each N (right), with the "
                                 "joint law dashed")]


def final_losses(runs: list[runs_lib.Run], tokens: int, metric: str) -> dict[int, float]:
  """The lowest loss at `tokens` per batch size over runs (learning rates): {batch: loss}."""
  best: dict[int, float] = {}
  for r in runs:
    loss = runs_lib.loss_after(r, tokens, metric)
    if not math.isnan(loss):
      best[r.batch_size] = min(loss, best.get(r.batch_size, math.inf))
  return best


def ablation(main_runs: list[runs_lib.Run], ablation_runs: list[runs_lib.Run], budget: int,
             target: float, metric: str) -> dict:
  """Final loss at D per batch size for each schedule (each tuned over its learning rates), and
  b2 = 0.95 against 0.999 at the batches swept with both: steps to the group's target (runs there
  stop at the target, so steps are what they measure), best learning rate for each b2."""
  schedules = {"constant + EWA": [r for r in main_runs if r.config["optimizer"]["b2"] == 0.95]}
  for name in ("cosine", "wsd"):
    schedules[name] = [r for r in ablation_runs if r.config["schedule"]["name"] == name]
  batches = sorted({r.batch_size for r in ablation_runs})
  losses = {name: final_losses(runs, budget, metric) for name, runs in schedules.items()}
  table = [{"batch_size": b, **{name: losses[name].get(b, math.nan) for name in losses}}
           for b in batches]
  b2_rows = []
  for b in sorted({r.batch_size for r in main_runs if r.config["optimizer"]["b2"] != 0.95}):
    row = {"batch_size": b}
    for value in (0.95, 0.999):
      steps = [runs_lib.best_crossing(r, target, metric)[0] for r in main_runs
               if r.batch_size == b and r.config["optimizer"]["b2"] == value]
      row[str(value)] = min((s for s in steps if not math.isnan(s)), default=math.nan)
    b2_rows.append(row)
  return {"tokens": budget, "target": target, "metric": metric, "schedules": table, "b2": b2_rows}


def ablation_blocks(result: dict, n_params: int) -> list:
  names = [k for k in result["schedules"][0] if k != "batch_size"] if result["schedules"] else []
  blocks = [report_lib.heading("Protocol ablation: constant LR + EWA vs cosine and WSD"),
            report_lib.paragraph(
                f"N = {n_params:,} non-embedding parameters, D = {result['tokens']:,} tokens. Loss "
                f"at D ({plots.loss_label(result['metric'])}), best learning rate per batch size "
                "and schedule; cosine and WSD runs are tuned for exactly D tokens, the "
                "constant-LR runs are the main sweep's (whose curves do not depend on the run "
                "length).")]
  if names:
    blocks.append(report_lib.table(["batch", *names, "constant - best other"], [
        [r["batch_size"], *(r[n] for n in names),
         r[names[0]] - min(r[n] for n in names[1:])] for r in result["schedules"]]))
  if result["b2"]:
    blocks += [report_lib.heading("Adam b2 at small batches", 3),
               report_lib.paragraph(f"Steps to the target loss {result['target']:.4f} of this "
                                    "(N, D), best learning rate for each b2."),
               report_lib.table(["batch", "steps, b2 = 0.95", "steps, b2 = 0.999",
                                 "ratio 0.999 / 0.95"],
                                [[r["batch_size"], r["0.95"], r["0.999"], r["0.999"] / r["0.95"]]
                                 for r in result["b2"]])]
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
    rows.append({"run": r.name, "losses": [runs_lib.loss_at(r.evals, key, s, "step") for s in points]})
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
  return (f"At equal tokens ({tokens_table['tokens'][-1]:,}) {tok} wins (loss {tok_loss:.3f}); at "
          f"equal steps ({steps_table['horizon']:,}, where the run with the fewest steps ends) {step} "
          f"wins (loss {step_loss:.3f}). Adaptive "
          "batches trade tokens for steps: they pay off where steps (wall time on many devices) "
          "are the constraint, a small constant batch where data is.")


def adaptive_blocks(runs: list[runs_lib.Run], labels: dict[str, str], tokens_table: dict,
                    metric: str, out: str) -> tuple[list, dict]:
  steps_table = at_equal_steps(runs, metric)
  sentence = winners(labels, tokens_table, steps_table)
  plot = study_plots.frontier(runs, labels, metric, f"{out}/frontier.png")
  name = lambda run: labels.get(run, run)
  blocks = [report_lib.heading("Who wins where"), report_lib.paragraph(sentence),
            report_lib.image(plot, f"{plots.loss_label(metric).capitalize()} against steps and "
                                   "against tokens: the steps / tokens trade-off frontier"),
            report_lib.heading("Loss at equal tokens", 3),
            report_lib.table(["schedule", *(f"{t:,} tokens" for t in tokens_table["tokens"]),
                              *(f"steps @ {t:,}" for t in tokens_table["tokens"])],
                             [[name(r["run"]), *r["losses"], *np.round(r["steps"], 1)]
                              for r in tokens_table["rows"]]),
            report_lib.heading("Loss at equal steps", 3),
            report_lib.paragraph("A dash: the run had ended (its tokens were spent)."),
            report_lib.table(["schedule", *(f"{s:,} steps" for s in steps_table["steps"])],
                             [[name(r["run"]), *r["losses"]] for r in steps_table["rows"]])]
  return blocks, {"equal_steps": steps_table, "sentence": sentence}
