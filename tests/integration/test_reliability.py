"""Preemption by signal and by kill, and the two policies for NaN/Inf, end to end."""

import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from cbs import data as data_lib
from cbs import train
from cbs.config import validation
from tests.helpers import STEP_TOKENS
from tests.helpers import assert_each_step_once
from tests.helpers import last_line
from tests.helpers import last_step
from tests.helpers import main_flags
from tests.helpers import records_with
from tests.helpers import run_main
from tests.helpers import run_module
from tests.helpers import short_run
from tests.helpers import short_run_config
from tests.helpers import values


def exploding_config(policy):
  c = short_run_config(
    6, {"log.every_steps": 100, "schedule.warmup_tokens": 0, "train.on_nonfinite": policy}
  )
  c.optimizer.update(dict(name="sgd", b1=0.0, clip=0.0, lr=1e30))  # the first update blows up
  return c


def test_nonfinite_stop_raises_with_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(
    train.NonFiniteError,
    match=r"non-finite loss or gradient at step 2 "
    r"\(4,096 tokens\); the latest complete "
    r"checkpoint is step 1",
  ):
    train.train_and_evaluate(exploding_config("stop"), str(tmp_path))
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def nan_weights(weights: np.ndarray) -> np.ndarray:
  """Every loss and gradient NaN."""
  return np.full_like(weights, np.nan)


def overflowing_weights(weights: np.ndarray) -> np.ndarray:
  """Two tokens weighted +-1e25: a finite loss (about 1e25) whose gradient's squared norm
  overflows float32, as a bfloat16 run's gradient can while its loss stays finite."""
  poisoned = np.zeros_like(weights)
  poisoned[0, 0], poisoned[0, 1] = 1e25, -1e25
  return poisoned


def poison_batch(monkeypatch, at_step: int, poison=nan_weights) -> None:
  """The training batch of `at_step` gets poisoned loss weights (NaN by default)."""
  make = data_lib.make

  def make_poisoned(*args):
    data = make(*args)
    next_batch, calls = data.train.next_batch, iter(range(1, 1_000_000))

    def poisoned(size):
      batch = next_batch(size)
      if next(calls) == at_step:
        batch = {**batch, "weights": poison(batch["weights"])}
      return batch

    data.train.next_batch = poisoned
    return data

  monkeypatch.setattr(data_lib, "make", make_poisoned)


def saved_state(workdir, step):
  return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")


@pytest.mark.parametrize("poison", [nan_weights, overflowing_weights])
def test_nonfinite_skip_leaves_params_optimizer_and_averages_bit_for_bit(
  tmp_path, monkeypatch, poison
):
  poison_batch(monkeypatch, at_step=3, poison=poison)
  config = short_run_config(5, {"train.on_nonfinite": "skip", "checkpoint.keep": 10})
  train.train_and_evaluate(config, str(tmp_path))
  logged = records_with(tmp_path, "loss")
  assert [r["nonfinite"] for r in logged] == [0, 0, 1, 0, 0]
  assert logged[-1]["skipped_steps"] == 1
  assert np.isfinite([r["loss"] for r in logged[3:]]).all()
  if poison is nan_weights:
    assert np.isnan(logged[2]["loss"])
  else:  # the loss alone would not show it
    assert np.isfinite(logged[2]["loss"]) and not np.isfinite(logged[2]["grad_norm"])
  before, skipped, after = (saved_state(tmp_path, s) for s in (2, 3, 4))
  assert set(before) == {"params", "opt", "ewa"}
  jax.tree.map(np.testing.assert_array_equal, skipped, before)  # bit for bit, counts included
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), after["params"], before["params"])
  assert all(jax.tree.leaves(changed))  # and the next step trains again


def preemption_run(steps: int, checkpoint_steps: int) -> dict:
  return {
    **short_run(steps),
    "checkpoint.every_tokens": checkpoint_steps * STEP_TOKENS,
    "schedule.warmup_tokens": 10 * STEP_TOKENS,
  }


def signalled(tmp_path, cache: str, sig: str, at_step: int, steps: int, checkpoint_steps: int):
  """The run in `tmp_path/split` through the command line, sending itself `sig` at `at_step`."""
  flags = main_flags(
    tmp_path / "split", {**preemption_run(steps, checkpoint_steps), "compile_cache_dir": cache}
  )
  return run_module("tests.integration.signal_worker", [sig, str(at_step), *flags])


def whole_run_losses(tmp_path, steps: int, checkpoint_steps: int) -> list[float]:
  config = short_run_config(steps, preemption_run(steps, checkpoint_steps))
  train.train_and_evaluate(config, str(tmp_path / "whole"))
  return values(tmp_path / "whole", "loss")


def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(tmp_path, compile_cache):
  # The signal is sent during step 10; the loop sees it at its next check and stops after step 11.
  run = signalled(tmp_path, compile_cache, "SIGTERM", 10, 30, 1000)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "stopped by a signal at step 11 (22,528 tokens, 11 steps in this process)" in run.stderr
  assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["11"]
  resumed = signalled(tmp_path, compile_cache, "SIGTERM", 0, 30, 1000)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step 11 (22,528 tokens)" in resumed.stderr
  assert "finished at step 30 (61,440 tokens, 19 steps in this process)" in resumed.stderr
  assert_each_step_once(tmp_path / "split")
  assert values(tmp_path / "split", "loss") == whole_run_losses(tmp_path, 30, 1000)


def test_sigkill_before_and_after_a_checkpoint_and_a_partial_save_then_resume_exactly(
  tmp_path, compile_cache
):
  split = tmp_path / "split"
  for kill_at in (3, 12):  # before the first checkpoint (step 8), then after it
    run = signalled(tmp_path, compile_cache, "SIGKILL", kill_at, 24, 8)
    assert run.returncode == -signal.SIGKILL
    assert "resumed from" not in run.stderr  # nothing to resume: the first kill left no checkpoint
    # Killed mid-run: the records stop before the kill step, nothing says the run finished.
    assert last_step(split) == kill_at - 1
    assert not (split / "done.json").exists()
  assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["8"]
  # A save cut off mid-way leaves only orbax's temporary directory, which must be ignored.
  (split / "checkpoints" / "16.orbax-checkpoint-tmp-1").mkdir()
  resumed = signalled(tmp_path, compile_cache, "SIGKILL", 0, 24, 8)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step 8 (16,384 tokens)" in resumed.stderr
  assert "finished at step 24 (49,152 tokens, 16 steps in this process)" in resumed.stderr
  assert_each_step_once(split)
  assert [r["step"] for r in records_with(split, "loss")] == list(range(1, 25))
  assert values(split, "loss") == whole_run_losses(tmp_path, 24, 8)


def test_unwritable_workdir_is_refused(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(validation.ConfigError, match="cannot be written"):
    validation.check_workdir(short_run_config(4), epath.Path(tmp_path / "a_file" / "run"))


def test_a_failed_checkpoint_write_stops_at_the_next_step_in_one_line_and_resume_works(
  tmp_path, compile_cache
):
  """The save of step 4 fails (disk full); checkpoints every 2 steps, so the run would otherwise
  go on to step 6 before noticing."""
  run = tmp_path / "run"
  flags = main_flags(
    run,
    {
      **short_run(8),
      "log.every_steps": 100,
      "checkpoint.every_tokens": 2 * STEP_TOKENS,
      "schedule.warmup_tokens": 0,
      "compile_cache_dir": compile_cache,
    },
  )
  failed = run_module("tests.integration.failing_disk_worker", ["4", *flags])
  assert failed.returncode == 1, failed.stderr[-3000:]
  assert last_line(failed.stderr) == (
    f"cbs: checkpoint 4 could not be written to {run}/checkpoints/4 (OSError: [Errno 28] No "
    f"space left on device: '{run}/checkpoints/4.orbax-checkpoint-tmp/progress.orbax-checkpoint-"
    "tmp'); stopped at step 5, the latest complete checkpoint is step 2: run again to resume "
    "from it once the cause is fixed"
  )
  assert "Traceback" not in failed.stderr
  assert last_step(run) == 4  # flushed at the last save
  assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  resumed = run_main(flags)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 2 (4,096 tokens)" in resumed.stderr
  assert "finished at step 8 (16,384 tokens, 6 steps in this process)" in resumed.stderr
  assert_each_step_once(run)
