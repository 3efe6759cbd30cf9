"""The adaptive study: does an adaptive batch reach a loss in fewer steps than the best constant
batch and the best ramp at equal tokens (Lau et al. 2024)?

Two stages under one root (`launch.adaptive_plan` says what and why): every arm over its
learning-rate grid and seeds, then the norm test's eta sweep at the norm arm's tuned rate. Each run
is trained once; a rerun reuses finished and failed runs. `analysis.adaptive_report` tunes the arms,
measures steps to common losses per seed and writes the report with its answer.
"""

import os

from etils import epath

from analysis import adaptive_report
from launch import adaptive_plan
from launch import backends
from launch import cbs_study
from launch import grid
from launch import study_plan
from launch.adaptive_plan import AdaptivePlan
from launch.adaptive_plan import Trial

COMMAND = "python -m launch.study adaptive"


def base_overrides(plan: AdaptivePlan, user: dict) -> dict:
  """The study's protocol on any config: constant rate after a short warmup, EWA, evenly spaced
  evals (steps to a loss are read between them), one run length."""
  return {"mesh.data": 1, "ewa.decays": [0.99, 0.998], "eval.batch_size": 32,
          "eval.dense_from_tokens": 0, "log.every_steps": 100, **user,
          "train_tokens": plan.tokens, "data_budget_tokens": plan.tokens,
          "schedule.warmup_tokens": plan.tokens // 40, "eval.tokens": plan.eval_tokens,
          "eval.every_tokens": plan.tokens // plan.evals, "eval.per_doubling": 0,
          "checkpoint.every_tokens": 10 * plan.tokens}


def train_all(trials: list[Trial], root: str, progress: study_plan.Progress) -> list:
  """Each trial's run loaded after training (or reuse), in order."""
  return [adaptive_report.Measured(t.arm.label, t.arm.kind, t.lr, t.seed,
                                   cbs_study.train(t.run, root, progress)) for t in trials]


def adaptive_study(root: str, plan: AdaptivePlan, config: str = study_plan.CONFIG,
                   user: dict | None = None) -> dict:
  user = user or {}
  base = base_overrides(plan, user)
  config_dict = grid.load_config(config, base)
  d_model, seq_len = config_dict.model.d_model, config_dict.data.seq_len
  first = adaptive_plan.grid_trials(plan, d_model, base, config)
  setup = {"setup": {"config": config, "overrides": user}}
  backends.write_manifest(epath.Path(root), COMMAND, [t.run for t in first], setup)
  cost = {arm.key: adaptive_plan.expected_cost(arm, plan, d_model, seq_len)
          for arm in [*adaptive_plan.arms(plan, d_model),
                      *(adaptive_plan.norm_arm(plan, e, d_model) for e in plan.etas)]}
  planned = {t.run.name: cost[t.arm.key] for t in first}
  sweep = {f"{e:g},{s}": cost[adaptive_plan.norm_arm(plan, e, d_model).key]
           for e in plan.etas for s in plan.seeds}  # named once the norm arm's rate is known
  progress = study_plan.Progress({**planned, **sweep})
  measured = train_all(first, root, progress)
  norm_label = adaptive_plan.norm_arm(plan, plan.eta, d_model).label
  lr = adaptive_report.tuned(measured, plan.tokens)[norm_label].lr
  print(f"[study] norm test (eta {plan.eta:g}): tuned rate {lr:g}; sweeping eta over "
        f"{', '.join(f'{e:g}' for e in plan.etas)}", flush=True)
  second = adaptive_plan.eta_trials(plan, lr, d_model, base, config)
  for t in second:
    progress.costs.pop(f"{t.arm.overrides['batch.eta']:g},{t.seed}")
    progress.add(t.run.name, cost[t.arm.key])
  runs = [t.run for t in first + second]
  backends.write_manifest(epath.Path(root), COMMAND, runs, setup)
  measured += train_all(second, root, progress)
  out = os.path.join(root, "report")
  os.makedirs(out, exist_ok=True)
  results = adaptive_report.write(measured, adaptive_report.Design(
      plan.start, plan.cap, plan.tokens, plan.eta, COMMAND), out)
  print(f"[study] {results['answer']['sentence']}", flush=True)
  return results

