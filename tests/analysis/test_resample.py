"""Run-level intervals and power: vectorised fits against the one-row fit, coverage of the joint
law's interval on simulated studies whose budgets share their runs, and power against its truth."""

import math

import numpy as np
import pytest

from analysis import design_power
from analysis import fits
from analysis import intervals
from analysis import measure
from analysis import resample
from analysis import run_level_law
from analysis import runs as runs_lib
from analysis import seed_tables
from analysis import vector_fits
from tests.analysis import fake_runs

BATCHES = [1, 2, 4, 8, 16, 32]
N = np.array([3e3, 7e3, 1.2e4])
D = np.array([6.4e4, 1.28e5, 2.56e5])
B_OPT, T = 1, 0.2


def test_vectorised_fit_matches_the_one_row_fit():
  rng = np.random.default_rng(0)
  steps = (
    1000
    * (1 + rng.uniform(2, 30, (40, 1)) / np.array(BATCHES))
    * np.exp(0.1 * rng.standard_normal((40, len(BATCHES))))
  )
  steps[3, 2] = np.nan  # a batch size that never reached the target
  a, b_noise = vector_fits.fit_many(BATCHES, steps)
  for i in range(steps.shape[0]):
    keep = np.isfinite(steps[i])
    fit = fits.fit_steps(np.array(BATCHES)[keep], steps[i][keep])
    assert a[i] == pytest.approx(fit.a, rel=1e-3) and b_noise[i] == pytest.approx(
      fit.b_noise, rel=1e-3
    )
  # Weights count points: batch 4 drawn twice is batch 4 listed twice.
  w = np.array([1, 0, 2, 1, 0, 1.0])
  a_w, bn_w = vector_fits.fit_many(BATCHES, steps[0], w)
  fit = fits.fit_steps([1, 4, 4, 8, 32], steps[0][[0, 2, 2, 3, 5]])
  assert (a_w, bn_w) == pytest.approx((fit.a, fit.b_noise), rel=1e-3)
  # One batch size: no fit.
  assert np.isnan(vector_fits.fit_many(BATCHES, steps[0], np.eye(6)[1])[0])


def _truth(alpha_noise: float = 0.1, beta_noise: float = 0.3):
  b_noise = 8 * (N[:, None] / N[0]) ** alpha_noise * (D[None, :] / D[0]) ** beta_noise
  a = 2000 * (D[None, :] / D[0]) ** 0.9 * np.ones((len(N), 1))
  n, d = np.repeat(N, len(D)), np.tile(D, len(N))
  true_alpha = vector_fits.joint_many(n, d, vector_fits.cbs_of(b_noise, B_OPT, T).reshape(-1))[1]
  return a, b_noise, n, d, true_alpha


def _alpha(steps, n, d, weights=None):
  _, b_noise = vector_fits.fit_many(BATCHES, steps, weights)
  cbs = vector_fits.cbs_of(b_noise, B_OPT, T)
  return vector_fits.joint_many(n, d, cbs.reshape(*cbs.shape[:-2], -1))[..., 1]


def test_run_level_interval_of_alpha_covers_at_its_nominal_level_and_point_resampling_does_not():
  """200 simulated studies, 2 seeds, 2 learning rates, noise mostly per run (shared by its
  budgets). With 200 studies the coverage's standard error is 1.5%: a true 95% lands in 90-98%
  with probability > 0.97; the points bootstrap (each group's batch sizes drawn independently,
  as if budgets were independent) covers less."""
  rng = np.random.default_rng(0)
  a, b_noise, n, d, true_alpha = _truth()
  sims, samples = 200, 100
  tables = seed_tables.simulate(
    rng, a, b_noise, BATCHES, sims, 2, sigma_run=0.05, sigma_budget=0.02, rate_penalty=(0.3, 0.0)
  )
  covered = covered_points = 0
  for study in tables:
    estimate = _alpha(seed_tables.best_over_rates(study), n, d)
    dof = intervals.effective_dof(_alpha(seed_tables.one_seed_variants(study), n, d) - estimate, 2)
    lo, hi = intervals.interval(
      _alpha(seed_tables.pick_seeds(rng, study, samples), n, d), 0.95, estimate, dof
    )
    covered += lo <= true_alpha <= hi
    idx = rng.integers(0, len(BATCHES), (samples, len(N), len(D), len(BATCHES)))
    counts = (idx[..., None] == np.arange(len(BATCHES))).sum(-2)
    best = np.broadcast_to(seed_tables.best_over_rates(study), counts.shape)
    lo, hi = intervals.interval(_alpha(best, n, d, counts))
    covered_points += lo <= true_alpha <= hi
    assert np.isfinite(estimate)
  assert 0.90 <= covered / sims <= 0.98, covered / sims
  assert covered_points / sims < 0.85, covered_points / sims
  print(
    f"coverage of the nominal 95% interval of alpha: resampling runs {covered / sims:.3f}, "
    f"resampling points {covered_points / sims:.3f}"
  )


def test_power_finds_an_exponent_the_design_detects_and_not_one_it_cannot():
  a, b_noise, n, d, _ = _truth(0.0, 0.3)
  values = vector_fits.cbs_of(b_noise, B_OPT, T).reshape(-1)
  coef = vector_fits.joint_many(n, d, values)
  law = {"values": list(values), "alpha": coef[1], "beta": coef[2]}
  quiet = design_power.power(a, law, n, d, BATCHES, B_OPT, T, "cbs", 0.02, 0.5, 2, sims=100)
  loud = design_power.power(a, law, n, d, BATCHES, B_OPT, T, "cbs", 0.2, 0.5, 2, sims=100)
  assert 0 < quiet["alpha"] < loud["alpha"] and 0 < quiet["beta"] < loud["beta"]
  # The detectable alpha is about 2.8 standard deviations of the fitted alpha under no trend.
  rng = np.random.default_rng(5)
  tables = seed_tables.simulate(
    rng, a, np.full_like(a, 8.0), BATCHES, 200, 2, 0.02 * 0.5**0.5, 0.02 * 0.5**0.5
  )
  spread = np.std(_alpha(seed_tables.best_over_rates(tables), n, d))
  assert quiet["alpha"] == pytest.approx(2.8 * spread, rel=0.35)
  # With the study's own interval, an exponent is detected once it clears the half-width.
  wide = design_power.power(
    a, {**law, "alpha_ci": (-0.3, 0.3)}, n, d, BATCHES, B_OPT, T, "cbs", 0.02, 0.5, 2, sims=100
  )
  assert 0.3 < wide["alpha"] < 1.17 * (0.3 + 2 * spread)  # the grid steps by 1.16x


def _seed_runs(root, b_noise: dict, n_params: int = fake_runs.N_PARAMS) -> list:
  """Fake runs at batches 1, 2, 4, 8 per seed, each seed with its own B_noise (its own noise)."""
  runs = []
  for seed, noise in b_noise.items():
    for batch in (1, 2, 4, 8):
      name = f"n{n_params}-b{batch}-s{seed}"
      fake_runs.write_run(
        root, name, batch, noise, 300 if batch == 1 else 400, 0, eval_every=1, n_params=n_params
      )
      run = runs_lib.load_run(root / name)
      run.config["seed"] = seed
      runs.append(run)
  return runs


def test_run_tables_average_seeds_and_recompute_the_target_from_the_drawn_runs(tmp_path):
  """Two seeds per cell whose curves differ by their B_noise: the estimate is the closed-form
  mean of the seeds' steps to the mean reference loss at D; a draw of seed 0 twice moves the
  target and every cell's steps sqrt(2) x as far from the mean as seed 0 lies (log space)."""
  budget_steps = (100, 200)
  b_noise = {0: 6.0, 1: 7.0}
  budgets = [s * fake_runs.SEQ_LEN for s in budget_steps]
  (model,) = resample.model_runs(_seed_runs(tmp_path, b_noise))
  tables = resample.Tables(model, budgets, [1, 2, 4, 8], 1, "best")
  estimate = tables.table()
  for i, s in enumerate(budget_steps):
    target = np.mean([fake_runs.loss(s, 1, b_noise[k]) for k in (0, 1)])  # EWA: the lower curve
    for j, batch in enumerate((1, 2, 4, 8)):
      expected = np.mean([fake_runs.steps_to(target, batch, b_noise[k]) for k in (0, 1)])
      assert estimate[i, j] == pytest.approx(expected, rel=0.01)
  stretch = lambda x, mean: np.exp(np.log(mean) + math.sqrt(2) * (np.log(x) - np.log(mean)))
  drawn = tables.table({c: [0, 0] for c in model.cells})
  for i, s in enumerate(budget_steps):
    losses = [fake_runs.loss(s, 1, b_noise[k]) for k in (0, 1)]
    target = stretch(losses[0], np.mean(losses))
    for j, batch in enumerate((1, 2, 4, 8)):
      steps = [fake_runs.steps_to(target, batch, b_noise[k]) for k in (0, 1)]
      assert drawn[i, j] == pytest.approx(stretch(steps[0], np.mean(steps)), rel=0.01)


def test_the_run_level_answer_fits_both_laws_to_the_seed_averaged_tables(tmp_path):
  budgets = [100 * fake_runs.SEQ_LEN, 200 * fake_runs.SEQ_LEN]
  runs = _seed_runs(tmp_path, {0: 6.0, 1: 7.0}, 10_000) + _seed_runs(
    tmp_path, {0: 12.0, 1: 15.0}, 40_000
  )
  answer = run_level_law.run_level_answer(runs, budgets, 1, T, "best", samples=50)
  models = resample.model_runs(runs)
  values = {"cbs": [], "noise_scale": []}  # the one-row fit of every seed-averaged table
  for m in models:
    for row in resample.Tables(m, budgets, [1, 2, 4, 8], 1, "best").table():
      fit = fits.fit_steps([1, 2, 4, 8], row)
      values["noise_scale"].append(fit.b_noise)
      values["cbs"].append(fits.critical_batch_size(fit, 1, T))
  n, d = np.repeat([10_000, 40_000], 2), np.tile(budgets, 2)
  design = np.stack([np.ones(4), np.log(n), np.log(d)], 1)
  for kind, law in ((k, answer[k]) for k in values):
    (_, alpha, beta), *_ = np.linalg.lstsq(design, np.log(values[kind]), rcond=None)
    assert (law["alpha"], law["beta"]) == pytest.approx((alpha, beta), abs=1e-3)
    assert law["alpha_ci"][0] < law["alpha"] < law["alpha_ci"][1]
    assert 1 <= law["alpha_dof"] < 8 * 2  # at most one degree of freedom per cell
  assert answer["cbs"]["alpha"] > 0.2  # B_noise doubles from the small model to the large one
  # The report's table (analysis.measure: mean over seeds, lowest over rates) is the same table.
  tables = [resample.Tables(m, budgets, [1, 2, 4, 8], 1, "best").table() for m in models]
  for g in measure.measure(runs_lib.at_budgets(runs, budgets), b_opt=1, samples=0):
    w, i = [10_000, 40_000].index(g["n_params"]), budgets.index(g["tokens"])
    assert [p["steps"] for p in g["best"]] == pytest.approx(tables[w][i].tolist(), rel=1e-9)
  assert answer["seeds"] == 2 and answer["resampled"] == "seeds in every cell"
