"""A study's runs as steps-to-target tables, and their bootstrap samples that resample runs.

Every data budget D of a model size is measured from the same runs (constant-LR curves serve every
D), so the budgets' steps to target are correlated: a bootstrap that resamples each group's points
independently treats them as independent and gives intervals too narrow for the exponent of N.
Here the resampling unit is the run: a bootstrap sample draws, in every (model size, batch, learning
rate) cell, as many seeds as it has (with replacement), and recomputes every budget from the drawn
runs - the targets from the drawn reference runs, then each batch size's steps as the lowest over
learning rates of the mean over the drawn seeds. With one seed per cell there is no run to resample;
the batch sizes of a model are resampled instead, the same ones for all its budgets.

The drawn means are `seed_tables.rescaled` to the variance of a mean over every seed; `seed_noise`
measures the run noise between seeds. The samples are fitted by `vector_fits` and their intervals
widened for few seeds by `intervals`.
"""

import dataclasses
import math

import numpy as np

from analysis import runs as runs_lib
from analysis import seed_tables


@dataclasses.dataclass(frozen=True)
class ModelRuns:
  """One model size's constant-LR runs by (batch, learning rate) cell, one run per seed."""

  n_params: int
  cells: dict  # (batch, lr) -> list[runs_lib.Run], by seed

  @property
  def seeds(self) -> int:
    return min(len(v) for v in self.cells.values())


def model_runs(runs: list[runs_lib.Run]) -> list[ModelRuns]:
  """The runs grouped by model size (smallest first) and cell."""
  out: dict[int, dict] = {}
  for r in sorted(runs, key=lambda r: (r.n_params, r.batch_size, r.seed, r.name)):
    if not r.adaptive:
      out.setdefault(r.n_params, {}).setdefault(
        (r.batch_size, r.config["optimizer"]["lr"]), []
      ).append(r)
  return [ModelRuns(n, cells) for n, cells in sorted(out.items())]


class Tables:
  """Steps-to-target tables [D, B] of one model from any draw of its seeds, cached per run."""

  def __init__(
    self, model: ModelRuns, budgets: list[int], batches: list[int], b_opt: int, metric: str
  ):
    self.model, self.budgets, self.batches = model, budgets, batches
    self.b_opt, self.metric = b_opt, metric
    self._loss: dict = {}
    self._steps: dict = {}

  def loss(self, run: runs_lib.Run, budget: int) -> float:
    key = (run.name, budget)
    if key not in self._loss:
      self._loss[key] = runs_lib.loss_after(run, budget, self.metric)
    return self._loss[key]

  def steps(self, run: runs_lib.Run, target: float) -> float:
    key = (run.name, target)
    if key not in self._steps:
      self._steps[key] = runs_lib.best_crossing(run, target, self.metric, "step")[0]
    return self._steps[key]

  def table(self, draw: dict | None = None) -> np.ndarray:
    """Steps [D, B] from `draw` (cell -> drawn seed indices; None or a cell left out: every seed
    once), each cell's mean over its drawn seeds `rescaled` against its mean over all seeds; nan
    where no rate reached the target."""
    out = np.full((len(self.budgets), len(self.batches)), np.nan)
    cells = self.model.cells

    def mean(cell, value):
      full = np.mean([value(r) for r in cells[cell]])
      if draw is None or cell not in draw:
        return full
      return float(
        seed_tables.rescaled(
          np.mean([value(cells[cell][k]) for k in draw[cell]]), full, len(cells[cell])
        )
      )

    for i, budget in enumerate(self.budgets):
      means = [mean(c, lambda r: self.loss(r, budget)) for c in cells if c[0] == self.b_opt]
      finite = [m for m in means if not math.isnan(m)]
      if not finite:
        continue
      target = min(finite)
      for j, batch in enumerate(self.batches):
        rates = [mean(c, lambda r: self.steps(r, target)) for c in cells if c[0] == batch]
        rates = [v for v in rates if not math.isnan(v)]
        out[i, j] = min(rates) if rates else np.nan
    return out


@dataclasses.dataclass(frozen=True)
class Draws:
  """A study's steps-to-target tables: the estimate and its bootstrap samples."""

  batches: list[int]
  seeds: int  # K: seeds per cell (1: the samples draw batch sizes, as `weights`)
  estimate: np.ndarray  # [W, D, B]
  samples: np.ndarray  # [S, W, D, B]
  weights: np.ndarray | None  # [S, W, 1, B]: how often each batch size was drawn (K = 1)
  variants: np.ndarray | None  # [cells, K, W, D, B]: `one_seed_variants` of the runs (K >= 2)


def run_tables(
  models: list[ModelRuns], budgets: list[int], b_opt: int, metric: str, samples: int, seed: int = 0
) -> Draws:
  """The estimate and bootstrap tables: K >= 2 draws seeds in every cell (every budget of the
  draw recomputed from the drawn runs); K = 1 draws batch sizes per model, the same for all its
  budgets."""
  rng = np.random.default_rng(seed)
  batches = sorted({c[0] for m in models for c in m.cells})
  seeds = min(m.seeds for m in models)
  tables = [Tables(m, budgets, batches, b_opt, metric) for m in models]
  estimate = np.stack([t.table() for t in tables])
  if seeds >= 2:
    boot = np.stack(
      [
        np.stack(
          [
            t.table({c: rng.integers(0, seeds, seeds) for c in m.cells})
            for t, m in zip(tables, models)
          ]
        )
        for _ in range(samples)
      ]
    )
    variants = []  # one cell of one model at one seed: the cells' shares of the variance
    for w, (t, m) in enumerate(zip(tables, models)):
      for c in m.cells:
        for k in range(seeds):
          v = estimate.copy()
          v[w] = t.table({c: [k] * seeds})
          variants.append(v)
    shape = (len(variants) // seeds, seeds, *estimate.shape)
    return Draws(batches, seeds, estimate, boot, None, np.stack(variants).reshape(shape))
  idx = rng.integers(0, len(batches), (samples, len(models), len(batches)))
  counts = np.stack(
    [np.bincount(row, minlength=len(batches)) for row in idx.reshape(-1, len(batches))]
  ).reshape(samples, len(models), 1, len(batches))
  boot = np.broadcast_to(estimate[None], (samples, *estimate.shape))
  return Draws(batches, seeds, estimate, boot, counts.astype(np.float64), None)


def seed_noise(
  models: list[ModelRuns], budgets: list[int], b_opt: int, metric: str
) -> tuple[float, float]:
  """(sigma, rho): the spread of a run's log steps to target between seeds of one cell (pooled
  over cells and budgets), and the correlation of a run's deviations between budgets; (nan, nan)
  with one seed."""
  deviations = []  # per cell: [D, K] deviations of log steps from the cell's mean
  for m in models:
    if m.seeds < 2:
      return math.nan, math.nan
    tables = Tables(m, budgets, [], b_opt, metric)
    targets = []
    for budget in budgets:
      means = [
        np.mean([tables.loss(r, budget) for r in m.cells[c]]) for c in m.cells if c[0] == b_opt
      ]
      targets.append(min(v for v in means if not math.isnan(v)))
    for runs in m.cells.values():
      logs = np.log([[tables.steps(r, t) for r in runs] for t in targets])
      if np.all(np.isfinite(logs)):
        deviations.append(logs - logs.mean(1, keepdims=True))
  if not deviations:
    return math.nan, math.nan
  k = deviations[0].shape[1]
  dev = np.stack([x for x in deviations if x.shape[1] == k])  # [cells, D, K]
  variance = float((dev**2).sum() / (dev.shape[0] * dev.shape[1] * (k - 1)))
  pairs = [(i, j) for i in range(dev.shape[1]) for j in range(dev.shape[1]) if i != j]
  cov = (
    float(np.mean([(dev[:, i] * dev[:, j]).sum() / (dev.shape[0] * (k - 1)) for i, j in pairs]))
    if pairs
    else 0.0
  )
  return math.sqrt(variance), float(np.clip(cov / variance, 0.0, 1.0)) if variance else 0.0
