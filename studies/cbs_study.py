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
"""

import dataclasses
import math
import os

from etils import epath

from analysis import guards
from analysis import measure
from analysis import report as report_lib
from analysis import runs as runs_lib
from analysis import sweep_report as cbs_analysis
from launch import backends
from launch import grid
from launch import outcome
from launch import two_phase
from studies import cbs_plan as study_plan
from studies import cbs_report as study_report
from studies import pilot as pilot_lib
from studies import pilot_measure as pilot_analysis
from studies.cbs_plan import Plan

COMMAND = "python -m launch.study cbs"


@dataclasses.dataclass(frozen=True)
class Model:
  width: float
  d_model: int

  @property
  def overrides(self) -> dict:
    return {"model.d_model": self.d_model}

  @property
  def prefix(self) -> str:
    return f"d_model={self.d_model},"


def train(run: grid.Run, root: str, progress: study_plan.Progress) -> runs_lib.Run:
  """Trains `run` under `root` unless an earlier invocation settled it (done or failed)."""
  workdir = os.path.join(root, run.name)
  reused = outcome.is_settled(epath.Path(workdir))
  if not reused:
    backends.run_inprocess([run], epath.Path(root), progress=lambda _: None)
  progress.finished(run.name, not reused)
  return runs_lib.load_run(workdir, run.name)


class Sweep:
  """The study's runs under one root, planned up front (names and costs) and trained in order."""

  def __init__(self, root: str, plan: Plan, config: str, base: dict, seq_len: int, setup: dict):
    self.root, self.plan, self.config, self.base = root, plan, config, base
    self.seq_len, self.setup = seq_len, setup
    self.planned: list[grid.Run] = []

  def run(self, model: Model, batch: int, lr: float, seed: int, extra: dict) -> grid.Run:
    return study_plan.make_run(
      batch, lr, {**self.base, **model.overrides, **extra}, self.config, model.prefix, seed
    )

  def lrs(self, model: Model, batch: int) -> list[float]:
    center = study_plan.lr_center(batch, model.d_model)
    return [m * center for m in self.plan.lr_multipliers]

  def costs(self, model: Model) -> dict[str, float]:
    """Expected cost of every run of this model (capped runs at their expected tokens to target)."""
    p, out = self.plan, {}
    for batch in p.batches:
      tokens = (
        reference_tokens(p)
        if batch == p.b_opt
        else study_plan.tokens_to_target(batch, p.b_opt, p.max_budget)
      )
      for seed in range(p.seeds):
        for lr in self.lrs(model, batch):
          name = self.run(model, batch, lr, seed, {}).name
          out[name] = study_plan.expected_cost(batch, tokens, model.d_model, self.seq_len)
    return out

  def record(self, run: grid.Run) -> None:
    self.planned.append(run)
    backends.write_manifest(epath.Path(self.root), COMMAND, self.planned, self.setup)

  def run_length(self, done: list[runs_lib.Run], batch: int, target: float) -> dict:
    """A reference trains past the largest D (`reference_tokens`); any other run stops at the
    target, capped at the steps of the best run of its batch so far (or 1.1 x a smaller batch's):
    slower, it could no longer be the minimum."""
    p = self.plan
    if batch == p.b_opt:
      return {"train_tokens": reference_tokens(p)}
    cap = measure.step_cap(done, batch, target, slack=1.0 if p.seeds == 1 else 1.5)
    limit = (
      4 * p.max_budget
      if math.isinf(cap)
      else two_phase.capped_tokens(cap, batch, self.seq_len, p.budgets[0])
    )
    return {"train_tokens": min(limit, 16 * p.max_budget), "train.stop_loss": round(target, 6)}

  def train_model(self, model: Model, progress: study_plan.Progress) -> list[runs_lib.Run]:
    """References first (they fix the target), then every other batch size, smallest first; at
    each batch size the learning-rate grid grows past an edge while the best rate sits on it.
    Runs stop at the lowest loss any reference run reached at the largest D: below every target a
    bootstrap of the seeds can draw."""
    p = self.plan
    done: list[runs_lib.Run] = []
    loss_at_d = lambda r: runs_lib.loss_after(r, p.max_budget, "best")
    self.train_grid(model, p.b_opt, math.nan, loss_at_d, progress, done)
    target = measure.lowest_loss(done, p.max_budget)
    print(
      f"[study] d_model={model.d_model}: stop loss (lowest reference loss at D="
      f"{p.max_budget:,} tokens): {target:.4f}",
      flush=True,
    )
    if math.isnan(target):
      raise ValueError(
        f"no reference run of d_model={model.d_model} reached D={p.max_budget:,} "
        "tokens (see their workdirs' failed.json)"
      )
    steps = lambda r: runs_lib.best_crossing(r, target, "best")[0]
    for batch in (b for b in p.batches if b != p.b_opt):
      self.train_grid(model, batch, target, steps, progress, done)
    return done

  def extend_edges(
    self, model: Model, done: list[runs_lib.Run], progress: study_plan.Progress
  ) -> list[runs_lib.Run]:
    """Runs that move a best learning rate off its grid's edge at the smaller budgets too (the
    grid was extended for the largest D while training; at a smaller D another rate can be best),
    measured again after each round, up to `plan.lr_extensions` rates past the planned grid."""
    p = self.plan
    target = measure.lowest_loss([r for r in done if r.batch_size == p.b_opt], p.max_budget)
    max_lrs = len(p.lr_multipliers) + p.lr_extensions
    added: list[runs_lib.Run] = []
    while p.lr_extensions:
      groups = measure.measure(runs_lib.at_budgets(done + added, p.budgets), p.b_opt, samples=0)
      extra = guards.lr_extensions(groups, max_lrs)
      if not extra:
        break
      print(
        f"[study] d_model={model.d_model}: best learning rates on a grid edge at some budget; "
        f"adding {', '.join(f'batch {b} lr {lr:g}' for b, lr in extra)}",
        flush=True,
      )
      for batch, lr in extra:
        for seed in range(p.seeds):
          added.append(
            self.train_added(
              model, batch, lr, seed, self.run_length(done + added, batch, target), progress
            )
          )
    return added

  def train_added(
    self,
    model: Model,
    batch: int,
    lr: float,
    seed: int,
    length: dict,
    progress: study_plan.Progress,
  ) -> runs_lib.Run:
    """A run planned late (past a grid edge): its expected cost joins the progress bar first."""
    run = self.run(model, batch, lr, seed, length)
    progress.add(
      run.name, study_plan.expected_cost(batch, length["train_tokens"], model.d_model, self.seq_len)
    )
    self.record(run)
    return train(run, self.root, progress)

  def train_grid(
    self,
    model: Model,
    batch: int,
    target: float,
    score,
    progress: study_plan.Progress,
    done: list[runs_lib.Run],
  ) -> None:
    """The learning rates of one batch size, every seed, appended to `done` as they finish: the
    planned grid, then one rate past the edge at a time while the best rate (lowest mean `score`
    over seeds) sits on an edge, `plan.lr_extensions` times at most. Run lengths follow
    `run_length` (`target`: the stop loss of non-reference runs)."""
    trained: list[runs_lib.Run] = []

    def train_rate(lr: float, late: bool) -> None:
      for seed in range(self.plan.seeds):
        length = self.run_length(done, batch, target)
        if late:
          trained.append(self.train_added(model, batch, lr, seed, length, progress))
        else:
          run = self.run(model, batch, lr, seed, length)
          self.record(run)
          trained.append(train(run, self.root, progress))
        done.append(trained[-1])

    for lr in self.lrs(model, batch):
      train_rate(lr, late=False)
    for _ in range(self.plan.lr_extensions):
      lrs = beyond_edge(trained, score)
      if not lrs:
        return
      print(
        f"[study] d_model={model.d_model}, batch {batch}: best learning rate on the grid's edge;"
        f" adding {lrs[0]:.3g}",
        flush=True,
      )
      train_rate(lrs[0], late=True)


def reference_tokens(plan: Plan) -> int:
  """A reference run's length: the target at D is the mean over seeds of their losses at D, which
  the slower seeds reach only after D; 25% more tokens let them get there (seed spreads of a few
  percent in steps)."""
  return plan.max_budget if plan.seeds == 1 else int(1.25 * plan.max_budget)


def beyond_edge(runs: list[runs_lib.Run], score) -> list[float]:
  """The next learning rate past the grid's edge when the best rate (lowest finite mean `score`
  over its seeds) sits on it (`analysis.guards.beyond_edge`); [] when it is interior, no rate
  scored or one rate was swept (no direction to go)."""
  means = measure.mean_over_seeds([(r.config["optimizer"]["lr"], score(r)) for r in runs])
  finite = [(s, lr) for lr, s in means.items() if not math.isnan(s)]
  lrs = sorted(means)
  if not finite or len(lrs) < 2:
    return []
  return guards.beyond_edge(lrs, min(finite)[1])


def ablation_runs(plan: Plan, config: str, base: dict, model: Model) -> list[grid.Run]:
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
    root, plan, config, base, models, config_dict.data.seq_len, setup, train
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
    out = os.path.join(root, "pilot", "report")
    report_lib.write(
      [report_lib.heading("CBS study pilot", 1), report_lib.code(COMMAND), *pilot_blocks],
      out,
      "CBS study pilot",
    )
    return {"pilot": True}
  config_dict = grid.load_config(config, base)
  models = [Model(w, study_plan.d_model(config_dict, w)) for w in plan.widths]
  sweep = Sweep(root, plan, config, base, config_dict.data.seq_len, setup)
  ablation_model = next(m for m in models if m.width == plan.ablation_width)
  extra = ablation_runs(plan, config, base, ablation_model)
  costs = {name: c for m in models for name, c in sweep.costs(m).items()}
  costs.update(
    {
      r.name: study_plan.expected_cost(
        r.overrides["batch.size"], plan.ablation_budget, ablation_model.d_model, sweep.seq_len
      )
      for r in extra
    }
  )
  progress = study_plan.Progress(costs)
  print(
    f"[study] {len(costs)} runs: model widths d_model={[m.d_model for m in models]}, batch "
    f"sizes {list(plan.batches)} x {len(plan.lr_multipliers)} learning rates x {plan.seeds} "
    f"seed(s) (B_opt {plan.b_opt}), data budgets {plan.budgets} tokens, ablation at d_model="
    f"{ablation_model.d_model}, D={plan.ablation_budget:,}; root {root}",
    flush=True,
  )
  main_runs = {m.d_model: sweep.train_model(m, progress) for m in models}
  for m in models:
    main_runs[m.d_model] += sweep.extend_edges(m, main_runs[m.d_model], progress)
  ablation_root = os.path.join(root, "ablation")
  backends.write_manifest(epath.Path(ablation_root), COMMAND + " (ablation)", extra, setup)
  done_extra = [train(r, ablation_root, progress) for r in extra]
  backends.write_manifest(epath.Path(ablation_root), COMMAND + " (ablation)", extra, setup)
  return report(
    root,
    plan,
    bootstrap,
    main_runs[ablation_model.d_model],
    done_extra,
    theory_blocks,
    pilot_blocks,
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
  blocks, results = cbs_analysis.build_report(
    root, out, plan.b_opt, 0.2, "best", None, bootstrap, COMMAND, plan.budgets
  )
  blocks = blocks[:2] + list(pilot_blocks) + blocks[2:]  # after the title and command
  group = next(
    g
    for g in results["groups"]
    if g["n_params"] == ablation_main[0].n_params and g["tokens"] == plan.ablation_budget
  )
  results["ablation"] = study_report.ablation(
    ablation_main, ablation_done, plan.ablation_budget, group["target"], "best"
  )
  blocks += study_report.ablation_blocks(results["ablation"], ablation_main[0].n_params)
  if theory_blocks:
    blocks += theory_blocks(out)
  cbs_analysis.save(blocks, results, out)
  answer = results.get("answer")
  if answer:
    print(f"[study] {answer['sentence']}", flush=True)
  return results
