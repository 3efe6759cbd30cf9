"""Intervals that resample runs, and the power of a design: the uncertainty of the joint law.

Every data budget D of a model size is measured from the same runs (constant-LR curves serve every
D), so the budgets' steps to target are correlated: a bootstrap that resamples each group's points
independently treats them as independent and gives intervals too narrow for the exponent of N.
Here the resampling unit is the run: a bootstrap sample draws, in every (model size, batch, learning
rate) cell, as many seeds as it has (with replacement), and recomputes every budget from the drawn
runs - the targets from the drawn reference runs, then each batch size's steps as the lowest over
learning rates of the mean over the drawn seeds. With one seed per cell there is no run to resample;
the batch sizes of a model are resampled instead, the same ones for all its budgets.

A bootstrap mean over K drawn seeds has (K-1)/K of the variance of the mean over K seeds, so in
every cell the drawn mean's deviation from the full mean is scaled by sqrt(K/(K-1)) (in log space)
before the lowest over learning rates and the fits. With 2 seeds each cell's variance rests on one
degree of freedom, and the exponents' variance on a few cells: the intervals are widened by
t(dof) / z, dof from Satterthwaite's formula over the cells' shares (`effective_dof`).

Fits here are vectorised over samples (the same least squares on log steps as `fits.fit_steps`), so
a study's 1000 samples and a test's few hundred simulated studies take seconds.
"""

import dataclasses
import math

import numpy as np

from analysis import fits
from analysis import runs as runs_lib


def fit_many(batch_sizes, steps, weights=None) -> tuple[np.ndarray, np.ndarray]:
  """(a, b_noise) of steps = a (1 + b_noise / B) for every row of `steps` [..., B], by least squares
  on log steps with b_noise >= 0 (`fits.fit_steps`, row by row); `weights` [..., B] count each
  point (a bootstrap that draws batch sizes), nan steps are left out, and a row with fewer than
  two batch sizes gives nan. The error of every row at every candidate B_noise is three matrix
  products, so thousands of rows fit at once."""
  batch = np.asarray(batch_sizes, np.float64)
  steps = np.asarray(steps, np.float64)
  weights = np.ones(steps.shape) if weights is None else np.broadcast_to(weights, steps.shape)
  shape = steps.shape[:-1]
  a, b_noise = _fit_rows(
    batch,
    np.log(steps).reshape(-1, batch.size),
    np.asarray(weights, np.float64).reshape(-1, batch.size),
  )
  return a.reshape(shape), b_noise.reshape(shape)


def _fit_rows(batch: np.ndarray, log_steps: np.ndarray, weights: np.ndarray):
  used = np.isfinite(log_steps) & (weights > 0)
  w = np.where(used, weights, 0.0)
  y = np.where(used, log_steps, 0.0)
  count = np.maximum(w.sum(1), 1e-300)
  sum_y, sum_yy = (w * y).sum(1), (w * y * y).sum(1)

  def sse(shape):  # shape [G, B] (every row) or [M, G, B] (one grid per row) -> error [M, G]
    if shape.ndim == 2:
      sum_s, cross, square = w @ shape.T, (w * y) @ shape.T, w @ (shape**2).T
    else:
      sum_s = np.einsum("mb,mgb->mg", w, shape)
      cross = np.einsum("mb,mgb->mg", w * y, shape)
      square = np.einsum("mb,mgb->mg", w, shape**2)
    log_a = (sum_y[:, None] - sum_s) / count[:, None]
    return sum_yy[:, None] - 2 * cross + square - count[:, None] * log_a**2

  rows = np.arange(y.shape[0])
  coarse = np.linspace(np.log(batch.min()) - 8, np.log(batch.max()) + 8, 161)
  err = sse(np.log1p(np.exp(coarse)[:, None] / batch[None, :]))
  centre = coarse[np.argmin(err, 1)]
  grid = centre[:, None] + (coarse[1] - coarse[0]) * np.linspace(-1, 1, 21)[None, :]  # [M, 21]
  err = sse(np.log1p(np.exp(grid)[:, :, None] / batch[None, None, :]))
  i = np.clip(np.argmin(err, 1), 1, grid.shape[1] - 2)
  left, mid, right = err[rows, i - 1], err[rows, i], err[rows, i + 1]
  curvature = left - 2 * mid + right
  offset = np.where(curvature > 0, 0.5 * (left - right) / np.where(curvature > 0, curvature, 1), 0)
  best = grid[rows, i] + np.clip(offset, -1, 1) * (grid[:, 1] - grid[:, 0])  # parabola's vertex
  shape = np.log1p(np.exp(best)[:, None] / batch[None, :])  # [M, B]
  log_a = (sum_y - (w * shape).sum(1)) / count
  fine = (w * (y - shape - log_a[:, None]) ** 2).sum(1)
  flat_log_a = sum_y / count
  flat = (w * (y - flat_log_a[:, None]) ** 2).sum(1)
  zero = flat <= fine
  a = np.exp(np.where(zero, flat_log_a, log_a))
  b_noise = np.where(zero, 0.0, np.exp(best))
  ordered = np.sort(np.where(used, batch[None, :], np.nan), 1)
  bad = (used.any(1) + (np.diff(ordered, axis=1) > 0).sum(1)) < 2
  return np.where(bad, np.nan, a), np.where(bad, np.nan, b_noise)


def joint_many(n, d, values) -> np.ndarray:
  """[..., 3] = (log c, alpha, beta) of log values = log c + alpha log N + beta log D for every
  row of `values` [..., G] (nan where a row has a nan)."""
  design = np.stack(
    [np.ones(len(n)), np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64))], 1
  )
  coef = np.log(np.asarray(values, np.float64)) @ np.linalg.pinv(design).T
  return coef


def slope_many(x, values) -> np.ndarray:
  """Slope of log values against log x for every row of `values` [..., G]."""
  log_x = np.log(np.asarray(x, np.float64))
  centred = log_x - log_x.mean()
  return (np.log(np.asarray(values, np.float64)) @ centred) / (centred @ centred)


def cbs_of(b_noise, b_opt: float, threshold: float):
  """Definition 1's CBS from B_noise = b / a (`fits.critical_batch_size`)."""
  return (1 + threshold) * b_opt + threshold * np.asarray(b_noise)


def interval(
  samples: np.ndarray, level: float = 0.95, estimate: float = math.nan, dof: float = math.inf
) -> tuple[float, float]:
  """Percentile interval of bootstrap `samples`, nan ones dropped ((nan, nan) if none is left),
  its ends moved away from `estimate` by t(dof) / z at `level` when the variance the bootstrap
  sees has `dof` degrees of freedom (`effective_dof`)."""
  samples = np.asarray(samples, np.float64)
  samples = samples[np.isfinite(samples)]
  if not samples.size:
    return (math.nan, math.nan)
  lo, hi = fits.percentile_interval(samples, level)
  if math.isfinite(dof) and math.isfinite(estimate):
    widen = t_quantile(level, dof) / t_quantile(level, math.inf)
    lo, hi = estimate + widen * (lo - estimate), estimate + widen * (hi - estimate)
  return (lo, hi)


def t_quantile(level: float, dof: float) -> float:
  """Two-sided `level` quantile of Student's t with `dof` degrees of freedom (Cornish-Fisher
  expansion around the normal quantile: within 0.5% for dof >= 3)."""
  p = 0.5 + level / 2  # the normal quantile by bisection on erf, no extra dependency
  lo, hi = 0.0, 10.0
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
  z = (lo + hi) / 2
  if not math.isfinite(dof):
    return z
  dof = max(dof, 1.0)
  return (
    z
    + (z**3 + z) / (4 * dof)
    + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
    + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
  )


def effective_dof(changes: np.ndarray, seeds: int) -> np.ndarray:
  """Satterthwaite's degrees of freedom of a bootstrap variance that sums the cells' variances.

  `changes` [cells, K, ...]: how a statistic moves when one cell's mean is replaced by one seed's
  (rescaled as the bootstrap does). A cell's share of the variance is their mean square / K,
  estimated from K - 1 degrees of freedom; with few cells carrying the variance a percentile
  interval is too narrow (2 seeds: one degree of freedom per cell), and t(dof) corrects it.
  """
  share = np.nanmean(np.asarray(changes, np.float64) ** 2, axis=1) / seeds
  total = np.nansum(share, axis=0)
  return total**2 / np.maximum(np.nansum(share**2, axis=0) / (seeds - 1), 1e-300)


# --- Simulated tables: steps to target per (model, budget, batch, learning rate, seed) -------------


def pick_seeds(rng: np.random.Generator, seed_steps: np.ndarray, samples: int) -> np.ndarray:
  """Bootstrap tables [S, W, D, B] from seed tables [W, D, B, R, K]: in every (W, B, R) cell K
  seeds drawn with replacement, shared by every budget; mean over seeds, lowest over rates."""
  w, _, b, r, k = seed_steps.shape
  idx = rng.integers(0, k, (samples, w, 1, b, r, k))
  drawn = np.take_along_axis(seed_steps[None], idx, axis=-1).mean(-1)
  return best_over_rates(rescaled(drawn, seed_steps.mean(-1)[None], k), seeds=False)


def rescaled(drawn, full, seeds: int):
  """A bootstrap mean over K drawn seeds has (K-1)/K of the variance of the mean over the K seeds:
  its deviation from the full mean, in log space, is scaled by sqrt(K/(K-1)) to restore it."""
  scale = math.sqrt(seeds / (seeds - 1)) if seeds > 1 else 1.0
  return np.exp(np.log(full) + scale * (np.log(drawn) - np.log(full)))


def one_seed_variants(seed_steps: np.ndarray) -> np.ndarray:
  """Tables [W*B*R, K, W, D, B] from seed tables [W, D, B, R, K]: each cell in turn holding one
  seed's steps (rescaled as a draw of K copies of it), every other cell its mean over seeds."""
  w, d, b, r, k = seed_steps.shape
  full = seed_steps.mean(-1)  # [W, D, B, R]
  out = np.broadcast_to(full, (w * b * r, k, w, d, b, r)).copy()
  for i, (wi, bi, ri) in enumerate(np.ndindex(w, b, r)):
    out[i, :, wi, :, bi, ri] = rescaled(seed_steps[wi, :, bi, ri, :].T, full[wi, :, bi, ri], k)
  return best_over_rates(out, seeds=False)


def best_over_rates(seed_steps: np.ndarray, seeds: bool = True) -> np.ndarray:
  """[..., B, R, K] -> [..., B]: mean over seeds (nan if a seed has nan), lowest over rates
  ([..., B, R] already averaged when not `seeds`)."""
  mean = seed_steps.mean(-1) if seeds else seed_steps
  with np.errstate(all="ignore"):
    return np.where(
      np.isnan(mean).all(-1), np.nan, np.nanmin(np.where(np.isnan(mean), np.inf, mean), -1)
    )


def simulate(
  rng: np.random.Generator,
  a: np.ndarray,
  b_noise: np.ndarray,
  batches,
  sims: int,
  seeds: int,
  sigma_run: float,
  sigma_budget: float,
  rate_penalty=(0.0,),
) -> np.ndarray:
  """Seed tables [sims, W, D, B, R, K] of steps = a (1 + b_noise / B) per (W, D) group (`a`,
  `b_noise` [W, D]), times exp(rate penalty) per learning rate, times log-normal noise: `sigma_run`
  per run (shared by its budgets: the correlation a study has) and `sigma_budget` per budget."""
  w, d = a.shape
  batch = np.asarray(batches, np.float64)
  r = len(rate_penalty)
  clean = np.log(a)[:, :, None] + np.log1p(b_noise[:, :, None] / batch)
  noise = sigma_run * rng.standard_normal(
    (sims, w, 1, batch.size, r, seeds)
  ) + sigma_budget * rng.standard_normal((sims, w, d, batch.size, r, seeds))
  penalty = np.asarray(rate_penalty, np.float64)[:, None]
  return np.exp(clean[None, :, :, :, None, None] + penalty + noise)


# --- The study's runs -------------------------------------------------------------------------------


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
        rescaled(np.mean([value(cells[cell][k]) for k in draw[cell]]), full, len(cells[cell]))
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
