"""The CBS study's protocol ablation, which Zhang et al. 2024 stress: at one (N, D), cosine and WSD
runs tuned for exactly D tokens at a few batch sizes, set against the main sweep's constant-LR
runs of that model at the same target. It owns which runs these are, what they cost, training
them under ROOT/ablation and measuring them; their report section is `studies.cbs_report`'s.
"""

import os

from etils import epath

from analysis import runs as runs_lib
from launch import backends
from launch import grid
from studies import cbs_plan as study_plan
from studies import cbs_report as study_report
from studies import cbs_sweep
from studies.cbs_plan import Plan


def planned_runs(plan: Plan, config: str, base: dict, model: cbs_sweep.Model) -> list[grid.Run]:
  """Cosine and WSD runs for exactly D tokens at the ablation batches, over the learning rates
  (seed 0: compared with the main sweep's seed-0 constant-LR runs)."""
  budget = plan.ablation_budget
  runs = []
  for schedule in ("cosine", "wsd"):
    for batch in plan.ablation_batches:
      for m in plan.lr_multipliers:
        runs.append(
          study_plan.make_run(
            batch,
            m * study_plan.lr_center(batch, model.d_model),
            {
              **base,
              **model.overrides,
              "schedule.name": schedule,
              "train_tokens": budget,
              "data_budget_tokens": budget,
            },
            config,
            f"{model.prefix}schedule.name={schedule},",
            seed=0,
          )
        )
  return runs


def expected_costs(
  plan: Plan, runs: list[grid.Run], model: cbs_sweep.Model, seq_len: int
) -> dict[str, float]:
  """Each ablation run's expected cost (it trains the whole budget: nothing stops it early)."""
  return {
    r.name: study_plan.expected_cost(
      r.overrides["batch.size"], plan.ablation_budget, model.d_model, seq_len
    )
    for r in runs
  }


def train_all(
  root: str, runs: list[grid.Run], setup: dict, progress: study_plan.Progress
) -> list[runs_lib.Run]:
  """Trains (or reuses) the ablation runs under ROOT/ablation, its manifest written before and
  after (the statuses the runs ended with)."""
  ablation_root = os.path.join(root, "ablation")
  command = cbs_sweep.COMMAND + " (ablation)"
  backends.write_manifest(epath.Path(ablation_root), command, runs, setup)
  done = [cbs_sweep.train(r, ablation_root, progress) for r in runs]
  backends.write_manifest(epath.Path(ablation_root), command, runs, setup)
  return done


def measure(
  groups: list[dict], plan: Plan, main: list[runs_lib.Run], done: list[runs_lib.Run]
) -> dict:
  """The schedules compared at the target of the ablation's (N, D) group of the main sweep
  (`groups`: the report's measured groups; `main`: that model's main-sweep runs)."""
  group = next(
    g for g in groups if g["n_params"] == main[0].n_params and g["tokens"] == plan.ablation_budget
  )
  return study_report.ablation(main, done, plan.ablation_budget, group["target"], "best")
