"""The CBS study: does the critical batch size scale with data size D or with model size N?

Zhang et al. 2024 answer with three experiments, which this study runs at CPU scale on one
protocol: model sizes at fixed D, data budgets at fixed N, and the coupled series (D proportional
to N), all measured from one sweep per model size. Constant-LR curves do not depend on the run
length, so each model's runs measure every budget D at once. Per model: reference runs at batch
B_opt train to the largest D and fix the targets; every other run stops at the target
(`train.stop_loss`) or once it is slower than the best learning rate of its batch size so far
(`analysis.measure.step_cap`: it could no longer be the minimum). At one (N, D) the study adds the
protocol ablation the paper stresses: cosine and WSD runs tuned for exactly D tokens, and b2 = 0.999
beside 0.95 at the smallest batches (swept like the learning rate there, so they count towards the
CBS of that model).
"""

import dataclasses
import math
import os

from etils import epath

from analysis import cbs as cbs_analysis
from analysis import guards
from analysis import measure
from analysis import runs as runs_lib
from analysis import study_report
from launch import backends
from launch import grid
from launch import outcome
from launch import study_plan
from launch import two_phase
from launch.study_plan import Plan

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

  def run(self, model: Model, batch: int, lr: float, b2: float, extra: dict) -> grid.Run:
    prefix = model.prefix + ("" if b2 == 0.95 else f"optimizer.b2={b2},")
    return study_plan.make_run(batch, lr, {**self.base, **model.overrides, "optimizer.b2": b2,
                                           **extra}, self.config, prefix)

  def b2_values(self, model: Model, batch: int) -> tuple[float, ...]:
    ablated = model.width == self.plan.ablation_width and batch in self.plan.b2_batches
    return (0.95, 0.999) if ablated else (0.95,)

  def lrs(self, model: Model, batch: int) -> list[float]:
    center = study_plan.lr_center(batch, model.d_model)
    return [m * center for m in self.plan.lr_multipliers]

  def costs(self, model: Model) -> dict[str, float]:
    """Expected cost of every run of this model (capped runs at their expected tokens to target)."""
    p, out = self.plan, {}
    for batch in p.batches:
      tokens = (p.max_budget if batch == p.b_opt
                else study_plan.tokens_to_target(batch, p.b_opt, p.max_budget))
      for b2 in self.b2_values(model, batch):
        for lr in self.lrs(model, batch):
          name = self.run(model, batch, lr, b2, {}).name
          out[name] = study_plan.expected_cost(batch, tokens, model.d_model, self.seq_len)
    return out

  def record(self, run: grid.Run) -> None:
    self.planned.append(run)
    backends.write_manifest(epath.Path(self.root), COMMAND, self.planned, self.setup)

  def run_length(self, done: list[runs_lib.Run], batch: int, target: float) -> dict:
    """A reference trains to the largest D; any other run stops at the target, capped at the
    steps of the best run of its batch so far (or 1.1 x a smaller batch's): slower, it could no
    longer be the minimum."""
    p = self.plan
    if batch == p.b_opt:
      return {"train_tokens": p.max_budget}
    cap = measure.step_cap(done, batch, target)
    limit = 4 * p.max_budget if math.isinf(cap) else two_phase.capped_tokens(
        cap, batch, self.seq_len, p.budgets[0])
    return {"train_tokens": min(limit, 16 * p.max_budget), "train.stop_loss": round(target, 6)}

  def train_model(self, model: Model, progress: study_plan.Progress) -> list[runs_lib.Run]:
    """References first (they fix the target), then every other batch size, smallest first; at
    each batch size the learning-rate grid grows past an edge while the best rate sits on it."""
    p = self.plan
    done: list[runs_lib.Run] = []
    loss_at_d = lambda r: runs_lib.loss_after(r, p.max_budget, "best")
    for b2 in self.b2_values(model, p.b_opt):
      self.train_grid(model, p.b_opt, b2, math.nan, loss_at_d, progress, done)
    target = measure.target_loss(done, p.max_budget)
    print(f"[study] d_model={model.d_model}: target loss at D={p.max_budget:,} tokens: "
          f"{target:.4f}", flush=True)
    if math.isnan(target):
      raise ValueError(f"no reference run of d_model={model.d_model} reached D={p.max_budget:,} "
                       "tokens (see their workdirs' failed.json)")
    steps = lambda r: runs_lib.best_crossing(r, target, "best")[0]
    for batch in (b for b in p.batches if b != p.b_opt):
      for b2 in self.b2_values(model, batch):
        self.train_grid(model, batch, b2, target, steps, progress, done)
    return done

  def extend_edges(self, model: Model, done: list[runs_lib.Run],
                   progress: study_plan.Progress) -> list[runs_lib.Run]:
    """Runs that move a best learning rate off its grid's edge at the smaller budgets too (the
    grid was extended for the largest D while training; at a smaller D another rate can be best),
    measured again after each round, up to `plan.lr_extensions` rates past the planned grid."""
    p = self.plan
    target = measure.target_loss([r for r in done if r.batch_size == p.b_opt], p.max_budget)
    max_lrs = len(p.lr_multipliers) + p.lr_extensions
    added: list[runs_lib.Run] = []
    while p.lr_extensions:
      groups = measure.measure(runs_lib.at_budgets(done + added, p.budgets), p.b_opt, samples=0)
      extra = guards.lr_extensions(groups, max_lrs)
      if not extra:
        break
      print(f"[study] d_model={model.d_model}: best learning rates on a grid edge at some budget; "
            f"adding {', '.join(f'batch {b} lr {lr:g}' for b, lr in extra)}", flush=True)
      for batch, lr in extra:
        added.append(self.train_added(model, batch, lr, 0.95, self.run_length(done + added, batch,
                                                                                target), progress))
    return added

  def train_added(self, model: Model, batch: int, lr: float, b2: float, length: dict,
                  progress: study_plan.Progress) -> runs_lib.Run:
    """A run planned late (past a grid edge): its expected cost joins the progress bar first."""
    run = self.run(model, batch, lr, b2, length)
    progress.add(run.name, study_plan.expected_cost(batch, length["train_tokens"], model.d_model,
                                                    self.seq_len))
    self.record(run)
    return train(run, self.root, progress)

  def train_grid(self, model: Model, batch: int, b2: float, target: float, score,
                 progress: study_plan.Progress, done: list[runs_lib.Run]) -> None:
    """The learning rates of one batch size (and b2), appended to `done` as they finish: the
    planned grid, then one rate past the edge at a time while the best run (lowest `score`) sits on
    an edge, `plan.lr_extensions` times at most. Run lengths follow `run_length` (`target`: the
    stop loss of non-reference runs)."""
    trained: list[runs_lib.Run] = []
    for lr in self.lrs(model, batch):
      run = self.run(model, batch, lr, b2, self.run_length(done, batch, target))
      self.record(run)
      trained.append(train(run, self.root, progress))
      done.append(trained[-1])
    for _ in range(self.plan.lr_extensions):
      lrs = beyond_edge(trained, score)
      if not lrs:
        return
      print(f"[study] d_model={model.d_model}, batch {batch}: best learning rate on the grid's edge;"
            f" adding {lrs[0]:.3g}", flush=True)
      trained.append(self.train_added(model, batch, lrs[0], b2, self.run_length(done, batch, target),
                                      progress))
      done.append(trained[-1])


def beyond_edge(runs: list[runs_lib.Run], score) -> list[float]:
  """The next learning rate past the grid's edge when the best run (lowest finite `score`) sits
  on it (`analysis.guards.beyond_edge`); [] when it is interior, no run scored or one rate was
  swept (no direction to go)."""
  scored = [(score(r), r.config["optimizer"]["lr"]) for r in runs]
  finite = [(s, lr) for s, lr in scored if not math.isnan(s)]
  lrs = sorted({lr for _, lr in scored})
  if not finite or len(lrs) < 2:
    return []
  return guards.beyond_edge(lrs, min(finite)[1])


def ablation_runs(plan: Plan, config: str, base: dict, model: Model) -> list[grid.Run]:
  """Cosine and WSD runs for exactly D tokens at the ablation batches, over the learning rates."""
  budget = plan.ablation_budget
  runs = []
  for schedule in ("cosine", "wsd"):
    for batch in plan.ablation_batches:
      for m in plan.lr_multipliers:
        runs.append(study_plan.make_run(
            batch, m * study_plan.lr_center(batch, model.d_model),
            {**base, **model.overrides, "schedule.name": schedule, "train_tokens": budget,
             "data_budget_tokens": budget},
            config, f"{model.prefix}schedule.name={schedule},"))
  return runs


def cbs_study(root: str, plan: Plan, bootstrap: int = 1000, theory_blocks=None,
              config: str = study_plan.CONFIG, user: dict | None = None) -> dict:
  """Trains the study's runs (reusing settled ones) and writes its report under ROOT/report."""
  user = user or {}
  base = {**study_plan.base_overrides(plan), **user}
  setup = {"setup": {"config": config, "overrides": user}}
  config_dict = grid.load_config(config, base)
  models = [Model(w, study_plan.d_model(config_dict, w)) for w in plan.widths]
  sweep = Sweep(root, plan, config, base, config_dict.data.seq_len, setup)
  ablation_model = next(m for m in models if m.width == plan.ablation_width)
  extra = ablation_runs(plan, config, base, ablation_model)
  costs = {name: c for m in models for name, c in sweep.costs(m).items()}
  costs.update({r.name: study_plan.expected_cost(r.overrides["batch.size"], plan.ablation_budget,
                                                 ablation_model.d_model, sweep.seq_len)
                for r in extra})
  progress = study_plan.Progress(costs)
  print(f"[study] {len(costs)} runs: model widths d_model={[m.d_model for m in models]}, batch "
        f"sizes {list(plan.batches)} x {len(plan.lr_multipliers)} learning rates (B_opt "
        f"{plan.b_opt}), data budgets {plan.budgets} tokens, ablation at d_model="
        f"{ablation_model.d_model}, D={plan.ablation_budget:,}; root {root}", flush=True)
  main_runs = {m.d_model: sweep.train_model(m, progress) for m in models}
  for m in models:
    main_runs[m.d_model] += sweep.extend_edges(m, main_runs[m.d_model], progress)
  ablation_root = os.path.join(root, "ablation")
  backends.write_manifest(epath.Path(ablation_root), COMMAND + " (ablation)", extra, setup)
  done_extra = [train(r, ablation_root, progress) for r in extra]
  backends.write_manifest(epath.Path(ablation_root), COMMAND + " (ablation)", extra, setup)
  return report(root, plan, bootstrap, main_runs[ablation_model.d_model], done_extra,
                theory_blocks)


def report(root: str, plan: Plan, bootstrap: int, ablation_main: list[runs_lib.Run],
           ablation_done: list[runs_lib.Run], theory_blocks=None) -> dict:
  """The report: the answer first, then the CBS of every (N, D), the ablation, the testbed."""
  out = os.path.join(root, "report")
  blocks, results = cbs_analysis.build_report(root, out, plan.b_opt, 0.2, "best", None, bootstrap,
                                              COMMAND, plan.budgets)
  group = next(g for g in results["groups"] if g["n_params"] == ablation_main[0].n_params
               and g["tokens"] == plan.ablation_budget)
  results["ablation"] = study_report.ablation(ablation_main, ablation_done, plan.ablation_budget,
                                              group["target"], "best")
  blocks += study_report.ablation_blocks(results["ablation"], ablation_main[0].n_params)
  if theory_blocks:
    blocks += theory_blocks(out)
  cbs_analysis.save(blocks, results, out)
  answer = results.get("answer")
  if answer:
    print(f"[study] {answer['sentence']}", flush=True)
  return results
