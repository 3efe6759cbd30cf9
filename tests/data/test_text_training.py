"""Training on real text sources end to end, and resuming on them exactly."""

from cbs import train
from tests.helpers import records_with
from tests.helpers import tiny_config


def text_config(source, tfds_dir, spm_model, steps):
  config = tiny_config()
  config.data.update(
    dict(
      source=source,
      vocab=spm_model,
      tfds_name="tiny_text:1.0.0",
      tfds_data_dir=str(tfds_dir),
      seq_len=32,
      prefetch=16,
    )
  )
  config.batch.size = 8
  config.train_tokens = steps * 8 * 32
  config.eval.tokens, config.eval.batch_size, config.eval.every_tokens = 256, 8, 0
  config.checkpoint.every_tokens = 0
  config.log.every_steps = 1
  return config


def losses(workdir):
  return [(r["step"], r["loss"]) for r in records_with(workdir, "loss")]


def test_tfds_run_resumed_mid_way_matches_the_uninterrupted_run(tmp_path, tfds_dir, spm_model):
  config = text_config("tfds", tfds_dir, spm_model, steps=6)
  train.train_and_evaluate(config, str(tmp_path / "whole"))
  train.train_and_evaluate(config, str(tmp_path / "split"), stop_after_steps=3)
  progress = train.train_and_evaluate(config, str(tmp_path / "split"))
  assert (progress["resumed_from"], progress["steps_run"]) == (3, 3)
  assert len(losses(tmp_path / "whole")) == 6
  assert losses(tmp_path / "split") == losses(tmp_path / "whole")


def test_seqio_c4_style_task_trains(tmp_path, tfds_dir, spm_model):
  config = text_config("seqio", tfds_dir, spm_model, steps=30)
  config.optimizer.lr = 1e-2
  train.train_and_evaluate(config, str(tmp_path))
  history = [loss for _, loss in losses(tmp_path)]
  assert history[-1] < history[0] - 1.0
