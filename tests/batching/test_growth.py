"""Runs whose batch grows: sharded with FSDP, equal to the same sizes given as a ramp, resumable."""

import numpy as np
import pytest

from cbs import metrics
from cbs import train
from configs import tiny


def growing_config(**batch):
  c = tiny.get_config()
  c.compile_cache_dir = ""
  c.mesh.data, c.mesh.fsdp = 8, True
  c.model.mlp_dim = 128
  c.batch.update(dict(schedule="norm", max_size=128, round="pow2", eta=0.5, test_interval=2))
  c.batch.update(batch)
  c.train_tokens = 640 * 64  # 4 steps at 32, 6 at 64, 1 at 128 when the batch grows as expected
  c.eval.every_tokens, c.eval.tokens, c.checkpoint.every_tokens = 0, 4096, 0
  c.log.every_steps = 1
  return c


def train_records(workdir):
  return [r for r in metrics.read_records(workdir) if "loss" in r]


@pytest.fixture(scope="module")
def norm_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("norm")
  progress = train.train_and_evaluate(growing_config(), str(workdir))
  return workdir, progress


def test_norm_test_grows_the_batch_twice_on_an_fsdp_mesh(norm_run):
  workdir, progress = norm_run
  sizes = [r["batch_size"] for r in train_records(workdir)]
  assert sizes == [32] * 4 + [64] * 6 + [128]
  assert [(h["old"], h["new"]) for h in progress["batch"]["history"]] == [(32, 64), (64, 128)]
  tested = [r for r in train_records(workdir) if "norm_test_stat" in r]
  assert tested and all(r["grad_noise_scale"] > 0 for r in tested)
  # Sequences per device: 4 per microbatch, so 32, 64, 128 are 1, 2, 4 accumulation steps; the
  # test at 32 splits its microbatch in two groups.
  assert [r["accum_steps"] for r in train_records(workdir)][::5] == [1, 2, 4]
  assert [r["test_groups"] for r in tested] == [2] * len(tested)  # FSDP: the microbatches only


def test_same_sizes_as_a_ramp_give_the_same_losses(norm_run, tmp_path):
  workdir, progress = norm_run
  stages = [(0, 32)] + [(h["tokens"], h["new"]) for h in progress["batch"]["history"]]
  train.train_and_evaluate(growing_config(schedule="ramp", ramp=tuple(stages)), str(tmp_path))
  ramp, norm = train_records(tmp_path), train_records(workdir)
  assert [r["batch_size"] for r in ramp] == [r["batch_size"] for r in norm]
  np.testing.assert_allclose([r["loss"] for r in ramp], [r["loss"] for r in norm], rtol=2e-5)


def test_resumed_run_makes_the_same_decisions(norm_run, tmp_path):
  workdir, _ = norm_run
  config = growing_config()
  train.train_and_evaluate(config, str(tmp_path), stop_after_steps=5)
  train.train_and_evaluate(config, str(tmp_path))
  resumed, whole = train_records(tmp_path), train_records(workdir)
  assert [r["batch_size"] for r in resumed] == [r["batch_size"] for r in whole]
  assert [r["loss"] for r in resumed] == [r["loss"] for r in whole]


def test_weight_decay_timescale_follows_the_growing_batch(tmp_path):
  stages = ((0, 32), (4 * 32 * 64, 64), (4 * 32 * 64 + 6 * 64 * 64, 128))  # as the norm run grows
  config = growing_config(schedule="ramp", ramp=stages, lr_scaling="sqrt")
  config.mesh.data, config.mesh.fsdp = 1, False  # one device: this checks the host-side rule
  config.optimizer.wd_timescale = 0.25
  train.train_and_evaluate(config, str(tmp_path))
  for r in train_records(tmp_path):
    peak_lr = config.optimizer.lr * (r["batch_size"] / 32) ** 0.5
    expected = r["batch_size"] * 64 / (peak_lr * 0.25 * config.train_tokens)
    assert r["weight_decay"] == pytest.approx(expected, rel=1e-6)
  decays = {r["batch_size"]: r["weight_decay"] for r in train_records(tmp_path)}
  assert decays[128] / decays[32] == pytest.approx(2.0)  # 4x the batch over 2x the lr
