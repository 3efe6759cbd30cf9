"""Guards of a CBS measurement on fake sweeps: edge learning rates, one-sided points, a CBS out of
range, and the learning-rate extensions that fix an edge."""

import math

import pytest

from analysis import guards
from analysis import measure
from analysis import runs as runs_lib
from tests.analysis import fake_runs

BUDGET_STEPS = 400


def write_sweep(
  root, grid: dict[int, list[float]], best_lr: dict[int, float], b_noise: float, b_opt: int
) -> None:
  """Runs whose B_noise grows by 30% per factor 2 between their lr and their batch's best lr."""
  target = fake_runs.loss(BUDGET_STEPS, b_opt, b_noise)
  budget = b_opt * BUDGET_STEPS * fake_runs.SEQ_LEN
  names = []
  for batch, lrs in grid.items():
    for lr in lrs:
      name = f"b{batch}-lr{lr:g}"
      if not (root / name).exists():
        penalty = 1 + 0.3 * abs(math.log2(lr / best_lr[batch]))
        steps = (
          BUDGET_STEPS
          if batch == b_opt
          else int(1.5 * fake_runs.steps_to(target, batch, b_noise * penalty))
        )
        fake_runs.write_run(
          root, name, batch, b_noise * penalty, steps, budget, lr=lr, eval_every=5
        )
      names.append(name)
  fake_runs.write_manifest(root, names)


def measured(root, b_opt: int) -> dict:
  (group,) = measure.measure(runs_lib.load_sweep(root), b_opt=b_opt, samples=50)
  return group


def test_an_edge_best_learning_rate_is_flagged_and_extended_until_interior(tmp_path):
  grid = {b: [1e-3, 2e-3, 4e-3] for b in (8, 16, 32, 64)}
  best_lr = {8: 2e-3, 16: 2e-3, 32: 8e-3, 64: 2e-3}  # batch 32's best lies above its grid
  write_sweep(tmp_path, grid, best_lr, 40.0, 8)
  group = measured(tmp_path, 8)
  checks = {e["batch_size"]: e for e in group["guards"]["batches"]}
  assert [b for b, e in checks.items() if e["best_lr_at_grid_edge"]] == [32]
  assert checks[32]["best_lr"] == 4e-3 and checks[32]["next_lrs"] == [8e-3]
  assert checks[16]["best_lr"] == 2e-3 and checks[16]["next_lrs"] == []
  assert (
    "batch 32: best lr 0.004 is the largest swept (0.001, 0.002, 0.004), so f(32) is "
    "overestimated: add lr 0.008"
  ) in group["guards"]["warnings"]
  assert guards.lr_extensions([group, group], max_lrs=4) == [(32, 8e-3)]  # shared across groups
  assert guards.lr_extensions([group], max_lrs=3) == []  # the limit
  assert guards.lr_extensions([group], max_lrs=4, batches={8, 16}) == []
  before = {r["batch_size"]: r["steps"] for r in group["best"]}
  grid[32].append(8e-3)
  write_sweep(tmp_path, grid, best_lr, 40.0, 8)
  group = measured(tmp_path, 8)
  assert guards.lr_extensions([group], max_lrs=4) == []  # 8e-3 is best: still an edge, at the limit
  assert guards.lr_extensions([group], max_lrs=5) == [(32, 1.6e-2)]
  after = {r["batch_size"]: r["steps"] for r in group["best"]}
  assert after[32] == pytest.approx(fake_runs.steps_to(group["target"], 32, 40.0), rel=0.01)
  assert before[32] == pytest.approx(fake_runs.steps_to(group["target"], 32, 40.0 * 1.3), rel=0.01)


def test_one_learning_rate_per_batch_asks_for_both_neighbours(tmp_path):
  write_sweep(tmp_path, {8: [1e-3], 16: [1e-3]}, {8: 1e-3, 16: 1e-3}, 40.0, 8)
  group = measured(tmp_path, 8)
  assert group["guards"]["batches"][1]["next_lrs"] == [5e-4, 2e-3]
  assert (
    "batch 16: one learning rate swept (0.001), so f(16) may not be its minimum: add lr "
    "0.0005 and 0.002" in group["guards"]["warnings"]
  )


def test_too_few_points_below_the_cbs(tmp_path):
  # CBS = 1.2 x 8 + 0.2 x 20 = 13.6: only batch 8 lies below it.
  lrs = {b: 1e-3 for b in (8, 16, 32, 64)}
  write_sweep(tmp_path, {b: [5e-4, 1e-3, 2e-3] for b in lrs}, lrs, 20.0, 8)
  g = measured(tmp_path, 8)
  assert g["cbs"] == pytest.approx(13.6, rel=0.02)
  assert (g["guards"]["points_below_cbs"], g["guards"]["points_above_cbs"]) == (1, 3)
  assert g["guards"]["cbs_in_range"]
  assert g["guards"]["warnings"][0] == (
    f"1 batch size(s) below the CBS {g['cbs']:.1f} ([8]), 3 wanted: add batch 4"
  )
  lo, hi = g["cbs_ci"]
  assert lo <= g["cbs"] <= hi


@pytest.mark.parametrize("b_opt,b_noise,flagged", [(8, 20.0, True), (4, 40.0, False)])
def test_a_reference_batch_outside_the_linear_regime_fails_its_guard(
  tmp_path, b_opt, b_noise, flagged
):
  # Tokens at B_opt over the small-batch limit: (a B_opt + b) / b = 1 + B_opt / B_noise.
  lrs = {b: 1e-3 for b in (b_opt, 2 * b_opt, 4 * b_opt, 8 * b_opt)}
  write_sweep(tmp_path, {b: [5e-4, 1e-3, 2e-3] for b in lrs}, lrs, b_noise, b_opt)
  g = measured(tmp_path, b_opt)
  assert g["guards"]["b_opt_token_overhead"] == pytest.approx(1 + b_opt / b_noise, rel=0.02)
  named = [w for w in g["guards"]["warnings"] if w.startswith("b_opt_token_overhead")]
  assert named == (
    [
      f"b_opt_token_overhead: B_opt={b_opt} needs {1 + b_opt / b_noise:.2f}x the "
      "tokens of the small-batch limit (at most 1.15): start the batch sizes lower "
      "(or use shorter sequences) and take a smaller B_opt"
    ]
    if flagged
    else []
  )


def test_a_cbs_above_the_swept_batch_sizes(tmp_path):
  # CBS = 1.2 x 8 + 0.2 x 400 = 89.6, beyond the largest batch 32.
  lrs = {b: 1e-3 for b in (8, 16, 32)}
  write_sweep(tmp_path, {b: [5e-4, 1e-3, 2e-3] for b in lrs}, lrs, 400.0, 8)
  g = measured(tmp_path, 8)
  assert g["cbs"] == pytest.approx(89.6, rel=0.02)
  assert not g["guards"]["cbs_in_range"] and g["guards"]["points_above_cbs"] == 0
  assert g["guards"]["warnings"] == [
    f"the CBS {g['cbs']:.1f} lies above the largest batch size that reached the target (32), so "
    "it is extrapolated: add batch 64"
  ]
  # The reference runs with the other learning rates stop at D without the best one's loss.
  assert g["guards"]["unreached"] == ["b8-lr0.0005", "b8-lr0.002"] and g["guards"]["capped"] == []


def test_linear_regime_flags_name_the_failed_checks_of_fitted_groups():
  def group(n, d, below, overhead, cbs=True):
    checks = {"points_below_cbs": below, "b_opt_token_overhead": overhead}
    return {"n_params": n, "tokens": d, "guards": checks, **({"cbs": 10.0} if cbs else {})}

  groups = [
    group(1e4, 64e3, guards.MIN_BELOW, guards.MAX_TOKEN_OVERHEAD),  # both at their limit: passes
    group(1e4, 128e3, guards.MIN_BELOW - 1, 1.0),
    group(2e4, 64e3, 5, 1.5),
    group(2e4, 128e3, 2, math.nan),  # no overhead measured: not shown to be linear
    group(4e4, 64e3, 0, 9.0, cbs=False),  # no CBS: nothing to flag
  ]
  assert guards.linear_regime_flags(groups) == {
    (1e4, 128e3): "2 batch sizes below its CBS",
    (2e4, 64e3): "B_opt needs 1.50x the small-batch tokens",
    (2e4, 128e3): "2 batch sizes below its CBS; B_opt needs nanx the small-batch tokens",
  }
