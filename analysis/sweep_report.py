"""The report of a `launch.sweep` root: what `python -m analysis.cbs report --root` writes.

`build_report` measures steps to target of the sweep's runs (Zhang et al. 2024, Definition 1), fits
the CBS per group and the scaling laws, and assembles the report section by section: the guards,
the answer (when N and D both vary), the CBS table, the scaling laws, one section per group, the
batch-size schedules and the local-CBS probes. `save` writes it with results.json and the table as
CSV (re-fittable with `analysis.cbs fit`). It computes and lays out; it parses no command line.
"""

import csv
import json
import os

from analysis import answer_report
from analysis import cbs_sections
from analysis import guards
from analysis import measure
from analysis import plots
from analysis import report as report_lib
from analysis import run_level_law
from analysis import runs as runs_lib
from analysis import scaling_laws
from analysis import schedule_sections

CBS_KINDS = (
  "'CBS (fit)' is B* = (1+t) B_opt + t b/a from the fit steps = a + b/B over every batch size: it "
  "interpolates between the swept batch sizes; its interval resamples the runs in a study (see "
  "the answer) and the points otherwise. "
  "'CBS (points)' applies the same rule to the measured points alone, so it is always a swept "
  "batch size and jumps by the grid's ratio with one noisy point; the scaling laws use the fitted "
  "CBS."
)


def build_report(
  root: str,
  out: str,
  b_opt: int,
  threshold: float,
  metric: str,
  target: float | None,
  samples: int,
  command: str,
  budgets: list[int] = (),
  skip_cbs: bool = False,
) -> tuple[list, dict]:
  """Blocks of the report and the results dict (also written as results.json)."""
  all_runs = runs_lib.load_sweep(root)
  if not all_runs:
    raise ValueError(f"no run under {root} has started (no config.json in any workdir)")
  os.makedirs(out, exist_ok=True)
  measured = runs_lib.at_budgets(all_runs, budgets) if budgets else all_runs
  members = [] if skip_cbs else measure.groups(measured)
  groups = [] if skip_cbs else measure.measure(measured, b_opt, threshold, metric, target, samples)
  laws = measure.scaling(groups, b_opt, threshold, samples)
  answer, noise_answer = answers(all_runs, groups, budgets, b_opt, threshold, metric, samples)
  blocks = overview_blocks(command, groups, len(all_runs), root, target, b_opt, threshold, metric)
  if answer:
    blocks += answer_report.answer_blocks(answer, groups, out, noise_answer)
  if any(g["best"] for g in groups):
    blocks += cbs_sections.cbs_table_blocks(groups, metric, out)
  blocks += cbs_sections.scaling_law_blocks(groups, laws, out)
  for i, g in enumerate(groups):
    blocks += cbs_sections.group_blocks(i, g, members[i], metric, out)
  comparison = measure.adaptive_table(all_runs, metric)
  if comparison:
    blocks += schedule_sections.schedule_blocks(comparison, all_runs, metric, out)
  probes, probe_sections = schedule_sections.probe_blocks(all_runs, out)
  blocks += probe_sections
  results = {
    "command": command,
    "root": root,
    "groups": groups,
    "scaling": laws,
    "answer": answer,
    "answer_noise_scale": noise_answer,
    "schedules": comparison,
    "probes": probes,
  }
  return blocks, results


def answers(
  all_runs: list[runs_lib.Run],
  groups: list[dict],
  budgets: list[int],
  b_opt: int,
  threshold: float,
  metric: str,
  samples: int,
) -> tuple[dict, dict]:
  """The joint law of Definition 1's CBS and of B_noise ({} each where N or D does not vary).

  With `budgets` one run measures every budget, so the intervals resample runs, not points
  (`run_level_law`), and each group's `cbs_ci` and `b_noise_ci` become the run-level ones."""
  fitted = [g for g in groups if "cbs" in g]
  if len({g["n_params"] for g in fitted}) < 2 or len({g["tokens"] for g in fitted}) < 2:
    return {}, {}
  if not budgets:
    return scaling_laws.answer(groups, b_opt, threshold, samples), {}
  both = run_level_law.run_level_answer(
    all_runs,
    list(budgets),
    b_opt,
    threshold,
    metric,
    samples,
    flagged=guards.linear_regime_flags(groups),
  )
  shared = {k: both[k] for k in ("seeds", "samples", "sigma_run", "rho", "resampled")}
  answer = {**both["cbs"], **shared, "sentence": both["sentence"], "groups": len(groups)}
  noise_answer = {**both["noise_scale"], **shared, "groups": len(groups)}
  for g in groups:
    i = next(
      i
      for i, x in enumerate(both["groups"])
      if (x["n_params"], x["tokens"]) == (g["n_params"], g["tokens"])
    )
    g["cbs_ci"], g["b_noise_ci"] = answer["values_ci"][i], noise_answer["values_ci"][i]
  return answer, noise_answer


def overview_blocks(
  command: str,
  groups: list[dict],
  runs: int,
  root: str,
  target: float | None,
  b_opt: int,
  threshold: float,
  metric: str,
) -> list:
  """The title, the command, the guards and what was measured how (the title and the command come
  first: a study inserts its own sections after them)."""
  return [
    report_lib.heading("Critical batch size report", 1),
    report_lib.code(command),
    *guard_blocks(groups),
    report_lib.paragraph(
      f"Runs: {runs} under {root}. Target: "
      f"{'given' if target else f'best loss of the batch-{b_opt} runs after D tokens'}"
      f"; loss: {plots.loss_label(metric)}."
      f" CBS = largest batch within {threshold:.0%} of linear scaling from B_opt={b_opt}. "
      f"{CBS_KINDS}"
    ),
  ]


def guard_blocks(groups: list[dict]) -> list:
  """The report's first section: every failing guard as one line, or a line saying none failed."""
  if not groups:
    return []
  failed: dict[str, list[str]] = {}  # one line per warning, naming the groups it applies to
  for g in groups:
    for w in g["guards"]["warnings"]:
      failed.setdefault(w, []).append(g["name"])
  lines = [
    f"{'every group' if len(names) == len(groups) > 1 else '; '.join(names)}: {w}"
    for w, names in failed.items()
  ]
  checked = (
    "Checked per group: best learning rate of each batch size inside its grid, at least "
    f"{guards.MIN_BELOW} batch sizes below the CBS and {guards.MIN_SIDE} above it, the CBS "
    "inside the batch sizes that reached the target, every batch size reached, and "
    f"b_opt_token_overhead: B_opt within {guards.MAX_TOKEN_OVERHEAD}x the tokens of the "
    "small-batch limit."
  )
  if not lines:
    return [report_lib.heading("Guards"), report_lib.paragraph(checked + " All passed.")]
  return [
    report_lib.heading("Guards"),
    report_lib.paragraph(checked + " Failed:"),
    report_lib.items(lines),
  ]


def write_table_csv(groups: list[dict], path: str) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["group", "batch_size", "steps", "n_params", "tokens"])
    for g in groups:
      for row in g["best"]:
        writer.writerow([g["name"], row["batch_size"], row["steps"], g["n_params"], g["tokens"]])


def save(blocks: list, results: dict, out: str) -> None:
  """report.md, report.html, results.json and the re-fittable cbs_table.csv under `out`."""
  md, html_path = report_lib.write(blocks, out, "Critical batch size report")
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2, default=float)
  write_table_csv(results["groups"], os.path.join(out, "cbs_table.csv"))
  print(f"report: {html_path}\n        {md}")
