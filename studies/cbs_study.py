"""The CBS study: does the critical batch size scale with data size D or with model size N?

Zhang et al. 2024 answer with three experiments, which this study runs at CPU scale on one
protocol: model sizes at fixed D, data budgets at fixed N, and the coupled series (D proportional
to N), all measured from one sweep per model size. Constant-LR curves do not depend on the run
length, so each model's runs measure every budget D at once. Per model: reference runs at batch
B_opt train to the largest D and fix the targets; every other run stops at the target
(`train.stop_loss`) or once it is slower than the best learning rate of its batch size so far
(`analysis.measure.step_cap`: it could no longer be the minimum). Every (width, batch, learning
rate) is trained with `plan.seeds` seeds (initialisation and data order), one protocol for every
width. A pilot (`studies.pilot`) runs first and refuses widths whose losses barely differ. At one
(N, D) the study adds the protocol ablation the paper stresses: cosine and WSD runs tuned for
exactly D tokens.

This module owns the study's order (pilot, main sweep, ablation, report) and the report's
assembly; the sweep's runs are `studies.cbs_sweep`'s, the ablation's `studies.cbs_ablation`'s.
"""

import os

from analysis import report as report_lib
from analysis import runs as runs_lib
from analysis import sweep_report
from launch import grid
from studies import cbs_ablation
from studies import cbs_plan as study_plan
from studies import cbs_report as study_report
from studies import cbs_sweep
from studies import pilot as pilot_lib
from studies import pilot_measure as pilot_analysis
from studies.cbs_plan import Plan
from studies.cbs_sweep import COMMAND
from studies.cbs_sweep import Model


class NoLeverage(ValueError):
  """The pilot found the model sizes' losses too close for a trend in N to be seen."""


def pilot(root: str, plan: Plan, config: str, base: dict, setup: dict, refuse: bool = True) -> list:
  """The pilot's report blocks, once the study's widths are found to have leverage on N. When they
  have not: raises NoLeverage, naming widths to use instead, or (not `refuse`: the quick study, a
  test of the pipeline at budgets too small for capacity to bind) says so in the report."""
  config_dict = grid.load_config(config, base)
  models = [(w, study_plan.d_model(config_dict, w)) for w in pilot_lib.candidate_widths(plan)]
  print(
    f"[study] pilot: d_model {[d for _, d in models]}, batches {plan.b_opt} and "
    f"{list(plan.pilot_batches)}, D {plan.budgets[0]:,} and {plan.max_budget:,} tokens",
    flush=True,
  )
  rows = pilot_lib.run_pilot(
    root, plan, config, base, models, config_dict.data.seq_len, setup, cbs_sweep.train
  )
  decision = pilot_analysis.decide(rows, plan.widths)
  blocks = pilot_lib.blocks(rows, decision, plan)
  print(f"[study] pilot: {pilot_lib.summary(decision, rows, plan)}", flush=True)
  if not decision.ok:
    line = pilot_lib.refusal(decision, rows, plan)
    if refuse:
      raise NoLeverage(line)
    print(f"[study] pilot (not refusing: quick study): {line}", flush=True)
    blocks.append(
      report_lib.paragraph(
        "This quick study is a test of the pipeline, not evidence: " + line + "."
      )
    )
  return blocks


def cbs_study(
  root: str,
  plan: Plan,
  bootstrap: int = 1000,
  theory_blocks=None,
  config: str = study_plan.CONFIG,
  user: dict | None = None,
  pilot_only: bool = False,
  refuse: bool = True,
) -> dict:
  """Runs the pilot, then trains the study's runs (reusing settled ones) and writes its report
  under ROOT/report (with `pilot_only`, the pilot's table under ROOT/pilot/report); `refuse`:
  whether a pilot without leverage on N stops the study (`pilot`)."""
  user = user or {}
  base = {**study_plan.base_overrides(plan), **user}
  setup = {"setup": {"config": config, "overrides": user}}
  pilot_blocks = pilot(root, plan, config, base, setup, refuse)
  if pilot_only:
    write_pilot_report(root, pilot_blocks)
    return {"pilot": True}
  config_dict = grid.load_config(config, base)
  models = [Model(w, study_plan.d_model(config_dict, w)) for w in plan.widths]
  sweep = cbs_sweep.Sweep(root, plan, config, base, config_dict.data.seq_len, setup)
  ablation_model = next(m for m in models if m.width == plan.ablation_width)
  extra = cbs_ablation.planned_runs(plan, config, base, ablation_model)
  costs = {name: c for m in models for name, c in sweep.costs(m).items()}
  costs.update(cbs_ablation.expected_costs(plan, extra, ablation_model, sweep.seq_len))
  progress = study_plan.Progress(costs)
  announce(root, plan, models, ablation_model, len(costs))
  main_runs = {m.d_model: sweep.train_model(m, progress) for m in models}
  for m in models:
    main_runs[m.d_model] += sweep.extend_edges(m, main_runs[m.d_model], progress)
  done_extra = cbs_ablation.train_all(root, extra, setup, progress)
  return report(
    root,
    plan,
    bootstrap,
    main_runs[ablation_model.d_model],
    done_extra,
    theory_blocks,
    pilot_blocks,
  )


def write_pilot_report(root: str, pilot_blocks: list) -> None:
  """The pilot's own report (`--pilot`), under ROOT/pilot/report."""
  out = os.path.join(root, "pilot", "report")
  report_lib.write(
    [report_lib.heading("CBS study pilot", 1), report_lib.code(COMMAND), *pilot_blocks],
    out,
    "CBS study pilot",
  )


def announce(root: str, plan: Plan, models: list[Model], ablation_model: Model, runs: int) -> None:
  """The line saying what the study will train (before the progress bar starts)."""
  print(
    f"[study] {runs} runs: model widths d_model={[m.d_model for m in models]}, batch "
    f"sizes {list(plan.batches)} x {len(plan.lr_multipliers)} learning rates x {plan.seeds} "
    f"seed(s) (B_opt {plan.b_opt}), data budgets {plan.budgets} tokens, ablation at d_model="
    f"{ablation_model.d_model}, D={plan.ablation_budget:,}; root {root}",
    flush=True,
  )


def report(
  root: str,
  plan: Plan,
  bootstrap: int,
  ablation_main: list[runs_lib.Run],
  ablation_done: list[runs_lib.Run],
  theory_blocks=None,
  pilot_blocks=(),
) -> dict:
  """The report: the pilot, the answer, the CBS of every (N, D), the ablation, the testbed."""
  out = os.path.join(root, "report")
  blocks, results = sweep_report.build_report(
    root, out, plan.b_opt, 0.2, "best", None, bootstrap, COMMAND, plan.budgets
  )
  blocks = blocks[:2] + list(pilot_blocks) + blocks[2:]  # after the title and command
  results["ablation"] = cbs_ablation.measure(results["groups"], plan, ablation_main, ablation_done)
  blocks += study_report.ablation_blocks(results["ablation"], ablation_main[0].n_params)
  if theory_blocks:
    blocks += theory_blocks(out)
  sweep_report.save(blocks, results, out)
  answer = results.get("answer")
  if answer:
    print(f"[study] {answer['sentence']}", flush=True)
  return results
