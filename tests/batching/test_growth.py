"""Runs whose batch grows: sharded with FSDP, equal to the same sizes given as a ramp, resumable."""

import numpy as np
import pytest

from cbs import compiled_steps
from cbs import data as data_lib
from cbs import train
from tests.helpers import records_with
from tests.helpers import tiny_config


def growing_config(**batch):
  c = tiny_config()
  c.mesh.data, c.mesh.fsdp = 8, True
  c.model.mlp_dim = 128
  # The trajectory below (when the test fails) was designed on this model form; the mechanics under
  # test do not depend on it, so it is pinned rather than re-derived from the paper defaults.
  c.model.update(qk_norm="head", gelu="tanh", out_init="depth")
  c.batch.update(dict(schedule="norm", max_size=128, round="pow2", eta=0.5, test_interval=2))
  c.batch.update(batch)
  c.train_tokens = 640 * 64  # 4 steps at 32, 6 at 64, 1 at 128 when the batch grows as expected
  c.eval.every_tokens, c.eval.tokens, c.checkpoint.every_tokens = 0, 4096, 0
  c.log.every_steps = 1
  return c


@pytest.fixture(scope="module")
def norm_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("norm")
  progress = train.train_and_evaluate(growing_config(), str(workdir))
  return workdir, progress


def test_norm_test_grows_the_batch_twice_on_an_fsdp_mesh(norm_run):
  workdir, progress = norm_run
  sizes = [r["batch_size"] for r in records_with(workdir, "loss")]
  assert sizes == [32] * 4 + [64] * 6 + [128]
  assert [(h["old"], h["new"]) for h in progress["batch"]["history"]] == [(32, 64), (64, 128)]
  tested = [r for r in records_with(workdir, "loss") if "norm_test_stat" in r]
  assert tested and all(r["grad_noise_scale"] > 0 for r in tested)
  # Sequences per device: 4 per microbatch, so 32, 64, 128 are 1, 2, 4 accumulation steps; the
  # test at 32 splits its microbatch in two groups.
  assert [r["accum_steps"] for r in records_with(workdir, "loss")][::5] == [1, 2, 4]
  assert [r["test_groups"] for r in tested] == [2] * len(tested)  # FSDP: the microbatches only


def test_accum_steps_records_the_microbatches_each_step_scanned(norm_run):
  workdir, _ = norm_run
  steps = records_with(workdir, "loss")
  for r in steps:
    plain = r["batch_size"] // (8 * 4)  # 8 devices, 4 sequences per device and microbatch
    # FSDP: a statistics step's groups are the microbatches it scans, at least two of them.
    assert r["accum_steps"] == (r["test_groups"] if "test_groups" in r else plain), r
  # At 32 the plain step scans one microbatch and the statistics step (every 2nd) two.
  assert [(r["batch_size"], r["accum_steps"]) for r in steps[:4]] == [(32, 1), (32, 2)] * 2


def test_same_sizes_as_a_ramp_give_the_same_losses(norm_run, tmp_path):
  workdir, progress = norm_run
  stages = [(0, 32)] + [(h["tokens"], h["new"]) for h in progress["batch"]["history"]]
  train.train_and_evaluate(growing_config(schedule="ramp", ramp=tuple(stages)), str(tmp_path))
  ramp, norm = records_with(tmp_path, "loss"), records_with(workdir, "loss")
  assert [r["batch_size"] for r in ramp] == [r["batch_size"] for r in norm]
  np.testing.assert_allclose([r["loss"] for r in ramp], [r["loss"] for r in norm], rtol=2e-5)


def test_resumed_run_makes_the_same_decisions(norm_run, tmp_path):
  workdir, _ = norm_run
  config = growing_config()
  train.train_and_evaluate(config, str(tmp_path), stop_after_steps=5)
  progress = train.train_and_evaluate(config, str(tmp_path))
  resumed, whole = records_with(tmp_path, "loss"), records_with(workdir, "loss")
  assert (progress["resumed_from"], progress["steps_run"]) == (5, len(whole) - 5)
  assert [r["batch_size"] for r in resumed] == [r["batch_size"] for r in whole]
  assert [r["loss"] for r in resumed] == [r["loss"] for r in whole]


def test_weight_decay_timescale_follows_the_growing_batch(tmp_path):
  stages = ((0, 32), (4 * 32 * 64, 64), (4 * 32 * 64 + 6 * 64 * 64, 128))  # as the norm run grows
  config = growing_config(schedule="ramp", ramp=stages, lr_scaling="sqrt")
  config.mesh.data, config.mesh.fsdp = 1, False  # one device: this checks the host-side rule
  config.optimizer.wd_timescale = 0.25
  train.train_and_evaluate(config, str(tmp_path))
  for r in records_with(tmp_path, "loss"):
    peak_lr = config.optimizer.lr * (r["batch_size"] / 32) ** 0.5
    expected = r["batch_size"] * 64 / (peak_lr * 0.25 * config.train_tokens)
    assert r["weight_decay"] == pytest.approx(expected, rel=1e-6)
  decays = {r["batch_size"]: r["weight_decay"] for r in records_with(tmp_path, "loss")}
  assert decays[128] / decays[32] == pytest.approx(2.0)  # 4x the batch over 2x the lr


def test_skipped_nan_step_leaves_the_statistics_and_the_batch_still_grows(tmp_path, monkeypatch):
  # Data parallel without FSDP: the statistics come from each device's local gradients.
  config = growing_config(stats_ema=0.5, max_size=64, precompile=False, eta=0.3)
  config.mesh.data, config.mesh.fsdp = 2, False
  config.train.on_nonfinite = "skip"
  config.train_tokens = 8 * 32 * 64
  make_data = data_lib.make

  def data_with_a_nan_batch(*args):
    data = make_data(*args)
    next_batch, calls = data.train.next_batch, []

    def poisoned(size):
      batch = next_batch(size)
      calls.append(size)
      if len(calls) == 2:  # step 2 tests the batch size: its statistics are NaN
        batch = {**batch, "weights": np.full_like(batch["weights"], np.nan)}
      return batch

    data.train.next_batch = poisoned
    return data

  monkeypatch.setattr(data_lib, "make", data_with_a_nan_batch)
  progress = train.train_and_evaluate(config, str(tmp_path))
  records = records_with(tmp_path, "loss")
  assert [r["nonfinite"] for r in records[:3]] == [0, 1, 0]
  assert "norm_test_stat" not in records[1] and records[1]["test_groups"] == 2
  assert [h["step"] for h in progress["batch"]["history"]] and all(
    h["step"] > 2 for h in progress["batch"]["history"]
  )
  assert records[-1]["batch_size"] == 64
  assert all(np.isfinite(v) for v in progress["batch"]["smoothed"].values())


def spy_on_steps(monkeypatch) -> list[str]:
  """The variant ("none" or a statistics kind) of every compiled train step the loop runs."""
  ran, step_compiler = [], compiled_steps.step_compiler

  def spying_compiler(*args, **kwargs):
    compile_step = step_compiler(*args, **kwargs)

    def compile_and_spy(key):
      compiled = compile_step(key)

      def run(*step_args):
        ran.append(key[2])
        return compiled(*step_args)

      return run

    return compile_and_spy

  monkeypatch.setattr(compiled_steps, "step_compiler", spying_compiler)
  return ran


def test_testing_every_other_step_follows_the_every_step_run(tmp_path, monkeypatch):
  # No growth (eta huge): the plain steps between tests must not change the trajectory, and the
  # statistics of the steps both runs test must agree.
  runs, ran = {}, spy_on_steps(monkeypatch)
  for interval in (1, 2):
    config = growing_config(eta=1e6, test_interval=interval, precompile=False)
    config.mesh.data, config.mesh.fsdp = 1, False
    config.train_tokens = 6 * 32 * 64
    del ran[:]
    train.train_and_evaluate(config, str(tmp_path / str(interval)))
    runs[interval] = records_with(tmp_path / str(interval), "loss")
  a, b = runs[1], runs[2]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=2e-5)
  assert ["norm_test_stat" in r for r in b] == [False, True] * 3
  # The loop runs the (costlier) statistics variant only on the steps that test, not on every step.
  assert [kind != "none" for kind in ran] == [False, True] * 3
  tested = [(x, y) for x, y in zip(a, b) if "norm_test_stat" in y]
  for name in ("norm_test_stat", "grad_noise_scale"):
    np.testing.assert_allclose(
      [y[name] for _, y in tested], [x[name] for x, _ in tested], rtol=1e-3
    )
