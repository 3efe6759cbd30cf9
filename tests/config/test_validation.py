"""Bad configs fail before any compute with one line naming the key, the value and what is allowed."""

import json

import pytest

from cbs.config import validation
from configs import tiny
from tests.helpers import TINY
from tests.helpers import run_main


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"optimizer.name": "adamx"}, "optimizer.name='adamx' is not one of: adamw"),
    ({"schedule.name": "cosin"}, "schedule.name='cosin' is not one of"),
    ({"data.source": "c4"}, "data.source='c4' is not one of: synthetic"),
    ({"model.name": "gpt"}, "model.name='gpt' is not one of: paper, llama"),
    ({"optimizer.lr": 0.0}, "optimizer.lr=0.0 must be positive"),
    ({"batch.size": -4}, "batch.size=-4 must be positive"),
    ({"data.seq_len": 0}, "data.seq_len=0 must be positive"),
    ({"train_tokens": 0}, "train_tokens=0 must be positive"),
    (
      {"schedule.warmup_tokens": 2_000_000},
      "schedule.warmup_tokens=2000000 is longer than the run",
    ),
    ({"mesh.data": 16}, "mesh 16x1 .* needs more than the 8 available devices"),
    (
      {"mesh.data": 8, "batch.size": 12},
      "batch.size=12 must be a multiple of the data-parallel size 8",
    ),
    ({"ewa.decays": (1.5,)}, "ewa.decays has 1.5"),
    ({"model.dtype": "float16"}, "model.dtype='float16' is not one of: float32, bfloat16"),
    ({"batch.max_size": 16}, "batch.max_size=16 is below batch.size=32"),
    ({"batch.schedule": "grow"}, "batch.schedule='grow' is not one of"),
    (
      {"batch.microbatch": 3},
      "batch.size=32 must be a multiple of batch.microbatch x data-parallel",
    ),
    (
      {"batch.schedule": "norm", "batch.microbatch": 1, "batch.size": 1, "mesh.data": 1},
      "batch.microbatch=1: the norm test splits a single microbatch into two groups",
    ),
    (
      {"model.name": "llama", "model.num_kv_heads": 1, "mesh.data": 2, "mesh.model": 4},
      r"model.num_kv_heads=1 does not split evenly over mesh.model=4 \(kv_heads -> model\)",
    ),
    (
      {"mesh.fsdp": True, "model.d_model": 60, "model.num_heads": 3},
      r"model.d_model=60 does not split evenly over mesh.data=8 \(embed -> data\)",
    ),
  ],
)
def test_each_bad_value_is_named(overrides, message):
  config = tiny.get_config()
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config, num_devices=8)


def test_tiny_config_is_valid():
  validation.validate(tiny.get_config(), num_devices=8)


@pytest.mark.parametrize(
  "flag,message",
  [
    (
      "--config.optimizer.name=adamx",
      "cbs: bad config: optimizer.name='adamx' is not one of: adamw, adam, sgd, lion, adafactor, "
      "signum",
    ),
    (
      "--config.optimizer.learning_rate=1e-3",  # a misspelt key names the closest one
      "cbs: bad config: optimizer.learning_rate is not a config key; did you mean optimizer.lr?",
    ),
  ],
)
def test_command_line_reports_one_line_and_writes_nothing(tmp_path, flag, message):
  workdir = tmp_path / "run"
  result = run_main([f"--config={TINY}", f"--workdir={workdir}", flag], cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [message]
  assert not workdir.exists()


@pytest.mark.parametrize(
  "mesh,message",
  [
    (
      {"coordinator": "localhost:1234"},
      r"mesh.coordinator='localhost:1234', mesh.num_processes=0, "
      r"mesh.process_id=-1: set all three",
    ),
    (
      {"coordinator": "localhost", "num_processes": 2, "process_id": 0},
      "mesh.coordinator='localhost' must be HOST:PORT",
    ),
    (
      {"coordinator": "localhost:1234", "num_processes": 2, "process_id": 2},
      "mesh.process_id=2 must be below mesh.num_processes=2",
    ),
  ],
)
def test_manual_multi_process_start_is_checked_before_connecting(mesh, message):
  from cbs.parallel import distributed as processes

  config = tiny.get_config()
  config.mesh.update(mesh)
  with pytest.raises(validation.ConfigError, match=message):
    processes.start(config.mesh)


def test_an_ahead_of_time_compile_checks_no_data_files():
  """`cbs.compile_check` validates with read_data=False: a vocabulary it cannot reach (a bucket
  offline) is refused for a run, not for a compile; a misspelt source still is."""
  config = tiny.get_config()
  config.data.update(
    source="text_files", files="/nonexistent/*.jsonl", vocab="/nonexistent/spm.model"
  )
  with pytest.raises(validation.ConfigError, match="data.vocab=.* is neither .byte. nor"):
    validation.validate(config, num_devices=1)
  validation.validate(config, num_devices=1, read_data=False)
  config.data.source = "c4"
  with pytest.raises(validation.ConfigError, match="data.source='c4' is not one of"):
    validation.validate(config, num_devices=1, read_data=False)


def test_a_workdir_run_on_other_model_or_data_settings_is_refused(tmp_path):
  """Both sections are compared: data.* settings order and tokenize what is trained."""
  saved = tiny.get_config()
  (tmp_path / "config.json").write_text(json.dumps({"config": saved.to_dict()}))
  other_data = tiny.get_config()
  other_data.data.synthetic.seed = 99
  with pytest.raises(
    validation.ConfigError,
    match=r"another model/data config "
    r"\(data.synthetic.seed: 1234 -> 99\)",
  ):
    validation.check_workdir(other_data, tmp_path)
  other_data.train.allow_data_change = True  # data deliberately changed: the model still must not
  validation.check_workdir(other_data, tmp_path)
  other_data.model.d_model = 32
  with pytest.raises(validation.ConfigError, match=r"\(model.d_model: 64 -> 32\)"):
    validation.check_workdir(other_data, tmp_path)
  performance = tiny.get_config()
  performance.data.prefetch = 7  # speed only: accepted
  validation.check_workdir(performance, tmp_path)


def test_a_missing_init_from_checkpoint_is_refused_before_the_workdir_exists(tmp_path):
  config = tiny.get_config()
  config.train.init_from = str(tmp_path / "no_such_run")
  with pytest.raises(
    validation.ConfigError,
    match=r"train.init_from=.*no_such_run' holds no "
    r"checkpoint",
  ):
    validation.check_init_from(config, tmp_path / "branch")
  (tmp_path / "parent" / "checkpoints" / "8").mkdir(parents=True)
  config.train.init_from, config.train.init_step = str(tmp_path / "parent"), 4
  with pytest.raises(
    validation.ConfigError,
    match=r"has no checkpoint at step 4 "
    r"\(train.init_step\); it has 8$",
  ):
    validation.check_init_from(config, tmp_path / "branch")
  from cbs import train  # the loop checks it before creating the workdir (imports TensorFlow)

  config.compile_cache_dir, config.mesh.data = "", 1
  with pytest.raises(validation.ConfigError, match=r"has no checkpoint at step 4"):
    train.train_and_evaluate(config, str(tmp_path / "branch"))
  assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
    "parent",
    "parent/checkpoints",
    "parent/checkpoints/8",
  ]
