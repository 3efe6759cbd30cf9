"""The adaptive study: batch-size schedules against constant batches at equal tokens and equal steps.

Five runs of one model for the same tokens: constant B_opt, constant largest batch, a stagewise
ramp with equal tokens per stage, the norm test as Lau et al. 2024 run it (tested every step, eta
0.1, raw statistics, no learning-rate change when the batch grows, sizes rounded up to a multiple of
the starting batch), and the norm test as tuned here (eta 0.5, statistics EMA 0.9, sqrt learning-
rate scaling, powers of two). The report tabulates loss at equal tokens and at equal steps, draws
the steps / tokens frontier and says which schedule wins where.
"""

import os

from etils import epath

from analysis import cbs as cbs_analysis
from analysis import report as report_lib
from analysis import study_report
from launch import backends
from launch import cbs_study
from launch import grid
from launch import study_plan
from launch.study_plan import Plan

COMMAND = "python -m launch.study adaptive"


def schedule_runs(plan: Plan, tokens: int, config: str, base: dict,
                  d_model: int) -> list[tuple[grid.Run, str]]:
  """(run, label) for the five schedules."""
  small, large = plan.b_opt, plan.batches[-1]
  lr = study_plan.lr_center(small, d_model)
  ladder = [b for b in plan.batches if b >= small]
  stages = [[int(tokens * k / len(ladder)), b] for k, b in enumerate(ladder) if k]
  grow = {**base, "batch.size": small, "optimizer.lr": lr, "batch.max_size": large}
  lau = {**grow, "batch.schedule": "norm", "batch.eta": 0.1, "batch.test_interval": 1,
         "batch.stats_ema": 0.0, "batch.lr_scaling": "none", "batch.round": "multiple"}
  tuned = {**grow, "batch.schedule": "norm", "batch.eta": 0.5, "batch.stats_ema": 0.9,
           "batch.lr_scaling": "sqrt", "batch.round": "pow2"}
  ramp = {**grow, "batch.schedule": "ramp", "batch.ramp": stages, "batch.lr_scaling": "sqrt",
          "batch.round": "pow2"}
  return [(study_plan.make_run(small, lr, base, config), f"constant {small}"),
          (study_plan.make_run(large, study_plan.lr_center(large, d_model), base, config),
           f"constant {large}"),
          (grid.Run("schedule=ramp", config, ramp), f"ramp {small} -> {large}"),
          (grid.Run("schedule=norm_lau", config, lau), "norm test (Lau et al.: every step, eta 0.1)"),
          (grid.Run("schedule=norm", config, tuned), "norm test (tuned: eta 0.5, EMA, sqrt lr)")]


def adaptive_study(root: str, plan: Plan, tokens: int, config: str = study_plan.CONFIG,
                   user: dict | None = None) -> dict:
  user = user or {}
  base = {**study_plan.base_overrides(plan), **user, "train_tokens": tokens,
          "data_budget_tokens": tokens, "eval.every_tokens": tokens // 32, "eval.per_doubling": 0,
          "schedule.warmup_tokens": tokens // 40}
  config_dict = grid.load_config(config, base)
  d_model = config_dict.model.d_model
  labelled = schedule_runs(plan, tokens, config, base, d_model)
  runs = [r for r, _ in labelled]
  setup = {"setup": {"config": config, "overrides": user}}
  backends.write_manifest(epath.Path(root), COMMAND, runs, setup)
  costs = {r.name: study_plan.expected_cost(r.overrides["batch.size"], tokens, d_model,
                                            config_dict.data.seq_len) for r in runs}
  progress = study_plan.Progress(costs)
  done = [cbs_study.train(r, root, progress) for r in runs]
  backends.write_manifest(epath.Path(root), COMMAND, runs, setup)
  out = os.path.join(root, "report")
  blocks, results = cbs_analysis.build_report(root, out, plan.b_opt, 0.2, "best", None, 0,
                                              COMMAND, skip_cbs=True)
  labels = {r.name: label for r, label in labelled}
  extra, frontier = study_report.adaptive_blocks([r for r in done if r.evals], labels,
                                                 results["schedules"], "best", out)
  results.update(frontier=frontier, labels=labels)
  at = blocks.index(report_lib.heading("Batch-size schedules"))  # who wins, then the details
  cbs_analysis.save(blocks[:at] + extra + blocks[at:], results, out)
  print(f"[study] {frontier['sentence']}", flush=True)
  return results
