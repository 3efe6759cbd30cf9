"""End-to-end training on CPU: sharding invariance, exact resume, learning the synthetic language."""

import json

import numpy as np
import pytest

from cbs import train
from cbs.metrics import records
from tests.helpers import STEP_TOKENS
from tests.helpers import comparable
from tests.helpers import records_with
from tests.helpers import tiny_config
from tests.helpers import values


def small_config(steps: int, data: int = 1, model: int = 1, fsdp: bool = False):
  return tiny_config(
    {
      "train_tokens": steps * STEP_TOKENS,
      "schedule.warmup_tokens": 2 * STEP_TOKENS,
      "model.mlp_dim": 128,
      "eval.tokens": 64 * 64,
      "eval.every_tokens": 3 * STEP_TOKENS,
      "checkpoint.every_tokens": 4 * STEP_TOKENS,
      "log.every_steps": 1,
      "mesh.data": data,
      "mesh.model": model,
      "mesh.fsdp": fsdp,
    }
  )


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("single")
  train.train_and_evaluate(small_config(5), str(workdir))
  return workdir


# Pure data parallel, pure FSDP, a model axis alone, and both axes with FSDP.
@pytest.mark.parametrize(
  "data,model,fsdp", [(8, 1, False), (8, 1, True), (4, 2, False), (2, 4, True)]
)
def test_sharded_training_matches_one_device(single_device_run, tmp_path, data, model, fsdp):
  train.train_and_evaluate(small_config(5, data=data, model=model, fsdp=fsdp), str(tmp_path))
  expected = values(single_device_run, "loss")
  got = values(tmp_path, "loss")
  assert len(got) == 5
  np.testing.assert_allclose(got, expected, rtol=2e-5)
  np.testing.assert_allclose(
    records_with(tmp_path, "eval_loss")[-1]["eval_loss_ewa_0.99"],
    records_with(single_device_run, "eval_loss")[-1]["eval_loss_ewa_0.99"],
    rtol=2e-5,
  )


def test_resumed_run_reproduces_uninterrupted_metrics(single_device_run, tmp_path):
  config = small_config(5)
  progress = train.train_and_evaluate(config, str(tmp_path), stop_after_steps=2)
  assert progress["step"] == 2
  # Simulate a crash that lost records written after the checkpoint: they must not be duplicated.
  with open(tmp_path / records.METRICS_FILE, "a") as f:
    f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
  progress = train.train_and_evaluate(config, str(tmp_path))
  assert (progress["resumed_from"], progress["steps_run"]) == (2, 3)
  assert comparable(tmp_path) == comparable(single_device_run)


def test_finished_run_returns_without_training(single_device_run):
  before = records.read_records(single_device_run)
  progress = train.train_and_evaluate(small_config(5), str(single_device_run))
  assert progress["tokens"] == 5 * STEP_TOKENS
  assert (progress["resumed_from"], progress["steps_run"]) == (5, 0)
  assert records.read_records(single_device_run) == before


def test_metrics_file_has_the_documented_fields(single_device_run):
  train_records = records_with(single_device_run, "loss")
  for key in ("step", "tokens", "batch_size", "loss", "lr", "grad_norm", "tokens_per_sec"):
    assert key in train_records[0]
  assert [r["tokens"] for r in train_records] == [STEP_TOKENS * i for i in range(1, 6)]
  eval_records = records_with(single_device_run, "eval_loss")
  assert [r["step"] for r in eval_records] == [3, 5]
  assert {"eval_loss_ewa_0.9", "eval_loss_ewa_0.99"} <= set(eval_records[0])
  info = json.loads((single_device_run / "config.json").read_text())
  assert info["floors"]["entropy_rate"] > 0


def test_training_closes_most_of_the_gap_to_the_loss_floor(tmp_path):
  config = tiny_config(
    {"train_tokens": 200 * STEP_TOKENS, "eval.every_tokens": 0, "eval.tokens": 64 * 64}
  )
  train.train_and_evaluate(config, str(tmp_path))
  floors = json.loads((tmp_path / "config.json").read_text())["floors"]
  uniform = np.log(config.data.synthetic.vocab_size)
  final = records_with(tmp_path, "eval_loss")[-1]["eval_loss"]
  # Cannot beat the exact Bayes-optimal loss of the held-out set, and must beat guessing by a lot.
  assert floors["eval_bayes_loss"] - 0.01 < final
  assert final < floors["entropy_rate"] + 0.6 * (uniform - floors["entropy_rate"])


def test_scanned_layers_train_sharded_and_resume_like_one_device(tmp_path):
  one, sharded = small_config(5), small_config(5, data=4, model=2, fsdp=True)
  one.model.scan_layers = sharded.model.scan_layers = True
  train.train_and_evaluate(one, str(tmp_path / "one"))
  assert (
    train.train_and_evaluate(sharded, str(tmp_path / "sharded"), stop_after_steps=2)["step"] == 2
  )
  progress = train.train_and_evaluate(sharded, str(tmp_path / "sharded"))
  assert (progress["resumed_from"], progress["steps_run"]) == (2, 3)
  for key in ("loss", "eval_loss_ewa_0.99"):
    np.testing.assert_allclose(
      values(tmp_path / "sharded", key), values(tmp_path / "one", key), rtol=2e-5
    )
