"""The adaptive study: does an adaptive batch reach a loss in fewer steps than the best constant
batch and the best ramp at equal tokens (Lau et al. 2024)?

Two stages under one root (`studies.adaptive_plan` says what and why): every arm over its
learning-rate grid and seeds (one rate further wherever the best sits on the grid's edge), then the
norm test's eta sweep at the norm arm's tuned rate. Each run is trained once; a rerun reuses
finished and failed runs. `studies.adaptive_measure` tunes the arms and measures steps to common
losses per seed; `studies.adaptive_report` writes the report with its answer.
"""

import os

from etils import epath

from launch import backends
from launch import grid
from studies import adaptive_measure
from studies import adaptive_plan
from studies import adaptive_report
from studies import cbs_plan as study_plan
from studies import cbs_sweep
from studies.adaptive_plan import AdaptivePlan
from studies.adaptive_plan import Trial

COMMAND = "python -m launch.study adaptive"


def base_overrides(plan: AdaptivePlan, user: dict) -> dict:
  """The study's protocol on any config: constant rate after a short warmup, EWA, evenly spaced
  evals (steps to a loss are read between them), one run length."""
  return {
    "mesh.data": 1,
    "ewa.decays": [0.99, 0.998],
    "eval.batch_size": 32,
    "eval.dense_from_tokens": 0,
    "log.every_steps": 100,
    **user,
    "train_tokens": plan.tokens,
    "data_budget_tokens": plan.tokens,
    "schedule.warmup_tokens": plan.tokens // 40,
    "eval.tokens": plan.eval_tokens,
    "eval.every_tokens": plan.tokens // plan.evals,
    "eval.per_doubling": 0,
    "checkpoint.every_tokens": 10 * plan.tokens,
  }


def check(plan: AdaptivePlan, config: str, user: dict) -> None:
  """Every planned arm's config validated as a run would validate it, before the root exists: a bad
  value in the user's overrides is one line (ValueError), and nothing is written."""
  base = base_overrides(plan, user)
  d_model = grid.load_config(config, base).model.d_model
  backends.validate([t.run for t in adaptive_plan.grid_trials(plan, d_model, base, config)])


class Study:
  """The study's trials under one root: planned (manifest, progress bar), then trained in order."""

  def __init__(
    self,
    root: str,
    plan: AdaptivePlan,
    config: str,
    base: dict,
    d_model: int,
    progress: study_plan.Progress,
    cost: dict[str, float],
    setup: dict,
  ):
    self.root, self.plan, self.config, self.base = root, plan, config, base
    self.d_model, self.progress, self.cost, self.setup = d_model, progress, cost, setup
    self.planned: list[Trial] = []
    self.measured: list[adaptive_measure.Measured] = []

  def train(self, trials: list[Trial]) -> None:
    """Adds `trials` to the manifest and the progress bar, then trains (or reuses) each."""
    for t in trials:
      self.progress.add(t.run.name, self.cost[t.arm.key])
    self.planned += trials
    backends.write_manifest(
      epath.Path(self.root), COMMAND, [t.run for t in self.planned], self.setup
    )
    self.measured += [
      adaptive_measure.Measured(
        t.arm.label, t.arm.kind, t.lr, t.seed, cbs_sweep.train(t.run, self.root, self.progress)
      )
      for t in trials
    ]

  def tuned_lr(self, arm: adaptive_plan.Arm) -> float:
    return adaptive_measure.tuned(self.measured, self.plan.tokens)[arm.label].lr

  def extend_edges(self) -> None:
    """Runs at a rate past the grid's edge, every seed, for each arm whose best rate sits on the
    edge, up to `plan.lr_extensions` rounds (a best rate on the edge is not known to be best)."""
    for _ in range(self.plan.lr_extensions):
      best = adaptive_measure.tuned(self.measured, self.plan.tokens)
      trials = [
        adaptive_plan.trial(arm, lr, seed, self.base, self.config)
        for arm in adaptive_plan.arms(self.plan, self.d_model)
        if (lr := adaptive_plan.beyond_edge(best[arm.label].lr, best[arm.label].rates))
        for seed in self.plan.seeds
      ]
      if not trials:
        return
      print(
        "[study] best rate on the grid's edge; adding "
        + ", ".join(dict.fromkeys(f"{t.arm.label} lr {t.lr:g}" for t in trials)),
        flush=True,
      )
      self.train(trials)


def adaptive_study(
  root: str, plan: AdaptivePlan, config: str = study_plan.CONFIG, user: dict | None = None
) -> dict:
  user = user or {}
  base = base_overrides(plan, user)
  config_dict = grid.load_config(config, base)
  d_model, seq_len = config_dict.model.d_model, config_dict.data.seq_len
  norm = adaptive_plan.norm_arm(plan, plan.eta, d_model)
  cost = {
    arm.key: adaptive_plan.expected_cost(arm, plan, d_model, seq_len)
    for arm in [
      *adaptive_plan.arms(plan, d_model),
      *(adaptive_plan.norm_arm(plan, e, d_model) for e in plan.etas),
    ]
  }
  sweep = {
    f"eta {e:g}, seed {s}": cost[adaptive_plan.norm_arm(plan, e, d_model).key]
    for e in plan.etas
    for s in plan.seeds
  }  # named once the norm arm's rate is known
  study = Study(
    root,
    plan,
    config,
    base,
    d_model,
    study_plan.Progress(sweep),
    cost,
    {"setup": {"config": config, "overrides": user}},
  )
  study.train(adaptive_plan.grid_trials(plan, d_model, base, config))
  study.extend_edges()
  lr = study.tuned_lr(norm)
  print(
    f"[study] norm test (eta {plan.eta:g}): tuned rate {lr:g}; sweeping eta over "
    f"{', '.join(f'{e:g}' for e in plan.etas)}",
    flush=True,
  )
  for key in sweep:
    study.progress.costs.pop(key)
  study.train(adaptive_plan.eta_trials(plan, lr, d_model, base, config))
  out = os.path.join(root, "report")
  os.makedirs(out, exist_ok=True)
  results = adaptive_report.write(
    study.measured,
    adaptive_report.Design(plan.start, plan.cap, plan.tokens, plan.eta, COMMAND),
    out,
  )
  print(f"[study] {results['answer']['sentence']}", flush=True)
  return results
