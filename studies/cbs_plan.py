"""What the studies train: model sizes, batch sizes, learning rates, budgets, and what each run costs.

A plan is fixed before any run starts, so the progress line can weigh every run by its expected cost
(steps x a per-step time that grows with batch and model size, plus compilation) and give an honest
ETA instead of counting runs: a batch-2 run of the largest model costs fifty times a capped batch-128
run of the smallest.
"""

import dataclasses
import math
import time

from launch import grid

CONFIG = "configs/cbs_paper.py:tiny"


@dataclasses.dataclass(frozen=True)
class Plan:
  widths: tuple[float, ...]  # model sizes: d_model = width x the config's (heads fixed)
  batches: tuple[int, ...]  # swept batch sizes (sequences); b_opt is the reference among them
  b_opt: int  # the reference batch: its runs train to the largest budget and fix the targets
  lr_multipliers: tuple[float, ...]  # learning rates per batch: these x lr_center(B, d)
  max_budget: int  # largest data budget D in tokens
  budget_divisors: tuple[int, ...]  # the report measures D = max_budget / k for each k
  eval_tokens: int
  evals_per_doubling: int  # log-spaced evals from the smallest budget / 4 on
  ablation_width: float  # the (N, D) of the protocol ablation: this model ...
  ablation_divisor: int  # ... at D = max_budget / this
  ablation_batches: tuple[int, ...]  # cosine and WSD runs, tuned over lr_multipliers
  lr_extensions: int = 0  # learning rates added per batch while the best one sits at a grid edge
  seeds: int = 1  # runs per (width, batch, learning rate): init and data order seeded alike
  pilot_widths: tuple[float, ...] = ()  # candidate widths the pilot measures (with `widths`)
  pilot_batches: tuple[int, ...] = (4, 16)  # the pilot's batches above b_opt (B_noise at min D)

  @property
  def budgets(self) -> list[int]:
    return sorted(self.max_budget // k for k in self.budget_divisors)

  @property
  def ablation_budget(self) -> int:
    return self.max_budget // self.ablation_divisor


# Widths d_model 16, 24, 32 of the tiny model: where capacity binds on the embedded language (the
# pilot measures it: d_model 64 and 128 reach within a few hundredths of d_model 32 at 256k tokens).
# Batches from 1: B_opt = 1 needs 1 + 1 / B_noise of the small-batch limit's tokens (B_noise >= 7
# keeps that within 15%; batch 4 needed up to 1.44x here), which holds from D = 64k tokens on
# (B_noise 4.8 at 32k for d_model 16). Batch 3 puts a third batch below CBSs of 3-4 sequences;
# batch 64 is left out: the largest CBS is a few sequences, and 32 is already two doublings above.
FULL = Plan(
  widths=(0.25, 0.375, 0.5),
  batches=(1, 2, 3, 4, 8, 16, 32),
  b_opt=1,
  lr_multipliers=(0.5, 1.0, 2.0),
  max_budget=256_000,
  budget_divisors=(4, 2, 1),
  eval_tokens=8192,
  evals_per_doubling=6,
  ablation_width=0.375,
  ablation_divisor=2,
  ablation_batches=(2, 8),
  lr_extensions=2,
  seeds=2,
  pilot_widths=(0.125, 0.25, 0.5, 1.0),
)
QUICK = Plan(
  widths=(0.25, 0.5),
  batches=(1, 2, 4, 8, 16),
  b_opt=1,
  lr_multipliers=(1.0,),
  max_budget=24_576,
  budget_divisors=(4, 2, 1),
  eval_tokens=2048,
  evals_per_doubling=4,
  ablation_width=0.5,
  ablation_divisor=1,
  ablation_batches=(4,),
  seeds=1,
  pilot_batches=(4, 16),
)


def lr_center(batch: int, d_model: int = 64) -> float:
  """Adam's best learning rate grows about as sqrt(B) below the CBS and falls as 1/width: centre
  each batch size's grid there (measured on the tiny model at batch 8, 128k tokens: best 1e-2 at
  d_model 32, 2.5e-3 at d_model 128)."""
  return 1e-2 * math.sqrt(batch / 32) * (64 / d_model)


def base_overrides(plan: Plan) -> dict:
  """The study's own protocol on top of any config: constant LR, EWA, and evals log-spaced in
  tokens, so a long large-batch run's crossing has the relative resolution of a short one's without
  evaluating every few steps."""
  return {
    "mesh.data": 1,
    "data_budget_tokens": plan.max_budget,
    "schedule.warmup_tokens": plan.max_budget // 40,
    "ewa.decays": [0.99, 0.998],
    "eval.tokens": plan.eval_tokens,
    "eval.batch_size": 32,
    "eval.every_tokens": plan.budgets[0] // 4,
    "eval.per_doubling": plan.evals_per_doubling,
    "eval.dense_from_tokens": 0,
    "checkpoint.every_tokens": 10 * plan.max_budget,
    "log.every_steps": 100,
  }


def d_model(config, width: float) -> int:
  """`model.d_model` at this width relative to `config`'s, keeping its heads (d_head scales)."""
  size = round(config.model.d_model * width)
  heads = config.model.num_heads
  if size % heads or (size // heads) % 2:
    raise ValueError(
      f"width {width} of model.d_model={config.model.d_model} gives {size}, "
      f"which {heads} heads of even width cannot split"
    )
  return size


def make_run(
  batch: int,
  lr: float,
  overrides: dict,
  config: str = CONFIG,
  prefix: str = "",
  seed: int | None = None,
) -> grid.Run:
  """A run named by what varies: `[prefix,]batch.size=B,optimizer.lr=LR[,seed=S]` (lr to 3
  digits); `seed` sets `seed`, which draws both the initialisation and the data order."""
  lr = float(f"{lr:.3g}")
  name = f"{prefix}batch.size={batch},optimizer.lr={lr}"
  overrides = {**overrides, "batch.size": batch, "optimizer.lr": lr}
  if seed is not None:
    name += f",seed={seed}"
    overrides["seed"] = seed
  return grid.Run(name, config, overrides)


def expected_cost(batch: int, tokens: float, d_model: int, seq_len: int) -> float:
  """Seconds a run is expected to take on a CPU: compilation, then steps whose time is a fixed
  overhead plus the matmul work of B x L tokens (6 x 24 d^2 flops per token for two layers) at the
  ~80 GFLOP/s two CPU cores reach on these shapes (measured: d_model 128, batch 8: 16 ms a step)."""
  steps = tokens / (batch * seq_len)
  flops_per_step = 6 * 24 * d_model**2 * batch * seq_len
  return 4.0 + steps * (4e-3 + flops_per_step / 8e10)


def tokens_to_target(batch: int, b_opt: int, budget: int, noise: float = 16.0) -> float:
  """Expected tokens to reach the reference's loss: flat below the noise scale, then growing."""
  return budget * (1 + batch / noise) / (1 + b_opt / noise)


class Progress:
  """A bar of the work done, weighted by each run's expected cost, with an ETA from the time spent
  per unit of expected cost so far (runs reused from an earlier invocation cost nothing)."""

  def __init__(self, costs: dict[str, float]):
    self.costs = dict(costs)
    self.done_cost = self.trained_cost = 0.0
    self.done = 0
    self.start = time.monotonic()

  def add(self, name: str, cost: float) -> None:
    """A run planned late (a learning-rate grid extension)."""
    self.costs[name] = cost

  def finished(self, name: str, trained: bool) -> None:
    cost = self.costs.get(name, 0.0)
    self.done += 1
    self.done_cost += cost
    self.trained_cost += cost if trained else 0.0
    total = sum(self.costs.values())
    share = min(self.done_cost / total, 1.0) if total else 1.0
    elapsed = time.monotonic() - self.start
    left = total - self.done_cost
    eta = (
      f", ETA ~{elapsed / self.trained_cost * left / 60:.1f} min"
      if self.trained_cost and left > 0
      else ""
    )
    bar = "#" * round(20 * share) + "." * (20 - round(20 * share))
    print(
      f"[study] [{bar}] {share:6.1%} of the work, {self.done}/{len(self.costs)} runs "
      f"({name}{'' if trained else ', reused'}); {elapsed / 60:.1f} min elapsed{eta}",
      flush=True,
    )
