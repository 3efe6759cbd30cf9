"""Preemption by signal, and the two policies for NaN/Inf, end to end."""

import pathlib
import signal
import subprocess
import sys
import time

import pytest
from etils import epath

from cbs import metrics
from cbs import validation
from cbs import train
from configs import tiny

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEP_TOKENS = 32 * 64


def exploding_config(policy):
  c = tiny.get_config()
  c.compile_cache_dir = ""
  c.mesh.data = 1
  c.optimizer.update(dict(name="sgd", b1=0.0, clip=0.0, lr=1e30))  # the first update blows up
  c.schedule.warmup_tokens = 0
  c.train.on_nonfinite = policy
  c.train_tokens = 6 * STEP_TOKENS
  c.checkpoint.every_tokens = STEP_TOKENS
  c.eval.every_tokens, c.eval.tokens, c.log.every_steps = 0, 4096, 100
  return c


def test_nonfinite_stop_raises_with_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(train.NonFiniteError, match=r"non-finite loss or gradient at step 2 "
                                                 r"\(4,096 tokens\); the latest complete "
                                                 r"checkpoint is step 1"):
    train.train_and_evaluate(exploding_config("stop"), str(tmp_path))
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def test_nonfinite_skip_counts_and_leaves_the_state_unchanged(tmp_path):
  train.train_and_evaluate(exploding_config("skip"), str(tmp_path))
  records = [r for r in metrics.read_records(tmp_path) if "loss" in r]
  assert [r["nonfinite"] for r in records] == [0, 1, 1, 1, 1, 1]
  assert records[-1]["skipped_steps"] == 5
  norms = [r["param_norm"] for r in records[1:]]
  assert len(set(norms)) == 1  # skipped updates change nothing (the step-1 params stay)


def wait_for_records(workdir: pathlib.Path, count: int, process, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if len([r for r in metrics.read_records(workdir) if "loss" in r]) >= count:
      return
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.2)
  raise TimeoutError("the run wrote no metrics in time")


def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(tmp_path):
  overrides = ["--config.compile_cache_dir=", "--config.mesh.data=1", "--config.log.every_steps=1",
               f"--config.train_tokens={30 * STEP_TOKENS}", "--config.eval.every_tokens=0",
               "--config.eval.tokens=4096", f"--config.checkpoint.every_tokens={1000 * STEP_TOKENS}",
               f"--config.schedule.warmup_tokens={10 * STEP_TOKENS}"]
  command = [sys.executable, "-m", "cbs.main", f"--config={ROOT / 'configs/tiny.py'}", *overrides]
  run = subprocess.Popen(command + [f"--workdir={tmp_path / 'split'}"], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  wait_for_records(tmp_path / "split", 10, run)
  run.send_signal(signal.SIGTERM)
  _, stderr = run.communicate(timeout=120)
  assert run.returncode == 0, stderr
  assert "Run the same command again to resume" in stderr
  stopped = len([r for r in metrics.read_records(tmp_path / "split") if "loss" in r])
  assert 10 <= stopped < 30
  resumed = subprocess.run(command + [f"--workdir={tmp_path / 'split'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, check=False)
  assert resumed.returncode == 0, resumed.stderr
  config = tiny.get_config()
  config.compile_cache_dir, config.mesh.data, config.log.every_steps = "", 1, 1
  config.train_tokens, config.eval.every_tokens, config.eval.tokens = 30 * STEP_TOKENS, 0, 4096
  config.checkpoint.every_tokens = 1000 * STEP_TOKENS
  config.schedule.warmup_tokens = 10 * STEP_TOKENS
  train.train_and_evaluate(config, str(tmp_path / "whole"))
  losses = [[r["loss"] for r in metrics.read_records(tmp_path / d) if "loss" in r]
            for d in ("split", "whole")]
  assert losses[0] == losses[1]


def short_config(steps=4):
  c = tiny.get_config()
  c.compile_cache_dir = ""
  c.mesh.data = 1
  c.train_tokens = steps * STEP_TOKENS
  c.checkpoint.every_tokens = STEP_TOKENS
  c.eval.every_tokens, c.eval.tokens, c.log.every_steps = 0, 4096, 1
  return c


def test_workdir_of_another_model_is_refused_and_left_untouched(tmp_path):
  train.train_and_evaluate(short_config(2), str(tmp_path))
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  other = short_config(3)
  other.model.d_model = 32
  with pytest.raises(validation.ConfigError, match=r"holds a run with another model/data config "
                                                   r"\(model.d_model: 64 -> 32\)"):
    train.train_and_evaluate(other, str(tmp_path))
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before
  other.train.allow_config_change = True
  validation.check_workdir(other, epath.Path(tmp_path))


def test_unwritable_workdir_is_refused(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(validation.ConfigError, match="cannot be written"):
    validation.check_workdir(short_config(), epath.Path(tmp_path / "a_file" / "run"))


def test_a_corrupt_latest_checkpoint_is_skipped_and_the_run_still_matches(tmp_path):
  train.train_and_evaluate(short_config(), str(tmp_path / "whole"))
  split = tmp_path / "split"
  train.train_and_evaluate(short_config(), str(split), stop_after_steps=3)
  for path in (split / "checkpoints" / "3" / "state").rglob("*"):
    if path.is_file():
      path.write_bytes(b"")  # cut short, as by a full disk
  train.train_and_evaluate(short_config(), str(split))
  losses = [[r["loss"] for r in metrics.read_records(d) if "loss" in r]
            for d in (split, tmp_path / "whole")]
  assert losses[0] == losses[1]


def test_sigkill_before_and_after_a_checkpoint_and_a_partial_save_then_resume_exactly(tmp_path):
  overrides = ["--config.compile_cache_dir=", "--config.mesh.data=1", "--config.log.every_steps=1",
               f"--config.train_tokens={24 * STEP_TOKENS}", "--config.eval.every_tokens=0",
               "--config.eval.tokens=4096", f"--config.checkpoint.every_tokens={8 * STEP_TOKENS}",
               f"--config.schedule.warmup_tokens={10 * STEP_TOKENS}"]
  command = [sys.executable, "-m", "cbs.main", f"--config={ROOT / 'configs/tiny.py'}", *overrides,
             f"--workdir={tmp_path / 'split'}"]
  for records_before_kill in (3, 12):  # before the first checkpoint (step 8), then after it
    run = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    wait_for_records(tmp_path / "split", records_before_kill, run)
    run.kill()
    run.wait(timeout=60)
  # A save cut off mid-way leaves only orbax's temporary directory, which must be ignored.
  (tmp_path / "split" / "checkpoints" / "16.orbax-checkpoint-tmp-1").mkdir()
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           check=False)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  whole = short_config(24)
  whole.checkpoint.every_tokens = 8 * STEP_TOKENS
  whole.schedule.warmup_tokens = 10 * STEP_TOKENS
  train.train_and_evaluate(whole, str(tmp_path / "whole"))
  records = [[r for r in metrics.read_records(d) if "loss" in r] for d in (tmp_path / "split",
                                                                          tmp_path / "whole")]
  assert [r["step"] for r in records[0]] == list(range(1, 25))
  assert [r["loss"] for r in records[0]] == [r["loss"] for r in records[1]]
