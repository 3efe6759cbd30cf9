"""What the adaptive study trains: its arms, their learning-rate grids, seeds and the eta sweep.

Lau et al. 2024 claim that an adaptive batch (the norm test) reaches a loss in fewer steps than a
constant batch at equal tokens. The comparison is only fair when every arm is tuned and the
adaptive ones can grow: each arm (constant batches from small to large, a stagewise ramp, the norm test,
the inner-product test) runs every rate of its grid with every seed (initialisation and data order)
for the same tokens; the growing arms start at the small batch and may grow 64x to the large one.
The norm test's request is about B_noise / eta^2 (about 100 x the noise scale at Lau's eta = 0.1),
so eta is swept from a value that saturates at once to one that barely grows, at the rate tuned for
the norm arm. Nothing here trains: `studies.adaptive_study` runs the plan.
"""

import dataclasses
import math

from launch import grid
from studies import cbs_plan as study_plan

GROWING = {
  "batch.test_interval": 1,
  "batch.stats_ema": 0.9,
  "batch.lr_scaling": "none",
  "batch.round": "pow2",
}  # tested every step; one rate (Lau et al.); power-of-two sizes


@dataclasses.dataclass(frozen=True)
class AdaptivePlan:
  start: int  # the constant-small arm's batch, where every growing arm starts (sequences)
  cap: int  # the constant-large arm's batch, every growing arm's largest
  tokens: int  # D: every run's token budget
  lr_multipliers: tuple[float, ...]  # each arm's grid: these x its centre rate
  seeds: tuple[int, ...]  # `seed`: initialisation and data order
  eta: float  # the norm arm's tolerance while its rate is tuned
  etas: tuple[float, ...]  # further tolerances swept at the norm arm's tuned rate
  theta: float  # the inner-product arm's tolerance
  evals: int  # evaluations per run, every tokens / evals
  eval_tokens: int
  lr_extensions: int = 0  # rates added past a grid's edge while an arm's best rate sits on it
  between: tuple[int, ...] = ()  # constant batches between start and cap, tuned like the ends


# Constant 8 and 32 bracket the model's noise scale (B_noise ~ 10-20 sequences at these budgets):
# the best constant batch at a mid-range loss may lie there, not at either end. 256k tokens: the
# norm test at eta 0.5 reaches 128 after ~150k of them (measured at 512k), so ~40% are spent there.
FULL = AdaptivePlan(
  start=2,
  cap=128,
  tokens=256_000,
  lr_multipliers=(0.5, 1.0, 2.0),
  seeds=(0, 1),
  eta=0.5,
  etas=(0.1, 0.25, 0.8, 1.0),
  theta=0.1,
  evals=32,
  eval_tokens=4096,
  lr_extensions=1,
  between=(8, 32),
)
QUICK = AdaptivePlan(
  start=2,
  cap=16,
  tokens=16_384,
  lr_multipliers=(1.0,),
  seeds=(0,),
  eta=0.5,
  etas=(0.1,),
  theta=0.1,
  evals=8,
  eval_tokens=1024,
)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One schedule of the comparison; `kind` groups arms for the answer (best of each kind)."""

  key: str  # in run names
  label: str  # in the report
  kind: str  # constant | ramp | adaptive
  overrides: dict
  lr_center: float


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of the study: an arm at one learning rate and seed."""

  arm: Arm
  lr: float
  seed: int
  run: grid.Run


def lr_center(batch: float, d_model: int) -> float:
  """Adam's best rate grows as sqrt(B) below the critical batch and then stays (the tiny model's
  CBS is 5-16 sequences): `study_plan.lr_center` up to 16, flat above."""
  return study_plan.lr_center(min(batch, 16), d_model)


def growing_center(plan: AdaptivePlan, d_model: int) -> float:
  """A growing arm keeps one rate (Lau et al.): centred between the start's and the cap's."""
  return math.sqrt(lr_center(plan.start, d_model) * lr_center(plan.cap, d_model))


def _growing(plan: AdaptivePlan) -> dict:
  return {"batch.size": plan.start, "batch.max_size": plan.cap, **GROWING}


def ramp_stages(plan: AdaptivePlan) -> list[list[int]]:
  """Doublings from start to cap with equal tokens per stage (Lau et al.'s stagewise warmup)."""
  sizes = [plan.start * 2**k for k in range(int(math.log2(plan.cap / plan.start)) + 1)]
  return [[plan.tokens * k // len(sizes), b] for k, b in enumerate(sizes) if k]


def norm_arm(plan: AdaptivePlan, eta: float, d_model: int) -> Arm:
  return Arm(
    f"norm_eta={eta:g}",
    f"norm test, eta {eta:g}",
    "adaptive",
    {**_growing(plan), "batch.schedule": "norm", "batch.eta": eta},
    growing_center(plan, d_model),
  )


def arms(plan: AdaptivePlan, d_model: int) -> list[Arm]:
  """The arms whose rates are tuned: constant batches (start, `between`, cap), the ramp, the norm
  test at `plan.eta` and the inner-product test."""
  grow, center = _growing(plan), growing_center(plan, d_model)
  constants = [
    Arm(f"constant={b}", f"constant {b}", "constant", {"batch.size": b}, lr_center(b, d_model))
    for b in (plan.start, *plan.between, plan.cap)
  ]
  return [
    *constants,
    Arm(
      "ramp",
      f"ramp {plan.start} -> {plan.cap}",
      "ramp",
      {**grow, "batch.schedule": "ramp", "batch.ramp": ramp_stages(plan)},
      center,
    ),
    norm_arm(plan, plan.eta, d_model),
    Arm(
      f"inner_product_theta={plan.theta:g}",
      f"inner-product test, theta {plan.theta:g}",
      "adaptive",
      {**grow, "batch.schedule": "inner_product", "batch.theta": plan.theta},
      center,
    ),
  ]


def trial(arm: Arm, lr: float, seed: int, base: dict, config: str) -> Trial:
  """A run named by what varies: `ARM,optimizer.lr=LR,seed=S` (lr to 3 digits)."""
  lr = float(f"{lr:.3g}")
  name = f"{arm.key},optimizer.lr={lr},seed={seed}"
  return Trial(
    arm,
    lr,
    seed,
    grid.Run(name, config, {**base, **arm.overrides, "optimizer.lr": lr, "seed": seed}),
  )


def grid_trials(plan: AdaptivePlan, d_model: int, base: dict, config: str) -> list[Trial]:
  """Every arm at every rate of its grid and every seed."""
  return [
    trial(arm, m * arm.lr_center, seed, base, config)
    for arm in arms(plan, d_model)
    for m in plan.lr_multipliers
    for seed in plan.seeds
  ]


def eta_trials(plan: AdaptivePlan, lr: float, d_model: int, base: dict, config: str) -> list[Trial]:
  """The eta sweep at the norm arm's tuned rate."""
  return [
    trial(norm_arm(plan, eta, d_model), lr, seed, base, config)
    for eta in plan.etas
    for seed in plan.seeds
  ]


def beyond_edge(lr: float, rates: tuple[float, ...]) -> float | None:
  """The next rate past the grid's edge when the best rate `lr` sits on it (same ratio as the
  grid's first step); None when it is interior or only one rate was swept."""
  if len(rates) < 2 or rates[0] < lr < rates[-1]:
    return None
  ratio = rates[1] / rates[0]
  return lr * ratio if lr == rates[-1] else lr / ratio


def expected_cost(arm: Arm, plan: AdaptivePlan, d_model: int, seq_len: int) -> float:
  """Seconds (`study_plan.expected_cost`): a growing arm as if at the geometric mean batch."""
  batch = arm.overrides["batch.size"]
  if arm.kind != "constant":
    batch = math.sqrt(plan.start * plan.cap)
  return study_plan.expected_cost(batch, plan.tokens, d_model, seq_len)
