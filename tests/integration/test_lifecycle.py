"""Every way out of a run releases what it started: signal handlers, threads, open files."""

import json
import pathlib
import signal
import threading

import pytest

from cbs import train
from cbs.batching import controller as controller_lib
from launch import backends
from launch import grid
from tests.helpers import TINY

# A run of two steps that writes, evaluates and checkpoints: every resource of the loop in use.
STEP_TOKENS = 8 * 16
OVERRIDES = {
  "compile_cache_dir": "",
  "train_tokens": 2 * STEP_TOKENS,
  "model.num_layers": 1,
  "model.d_model": 16,
  "model.num_heads": 2,
  "data.seq_len": 16,
  "batch.size": 8,
  "eval.tokens": 128,
  "eval.batch_size": 8,
  "eval.every_tokens": STEP_TOKENS,
  "checkpoint.every_tokens": STEP_TOKENS,
  "log.every_steps": 1,
  "schedule.warmup_tokens": 0,
}


def handlers() -> tuple:
  return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def threads() -> set[threading.Thread]:
  return {t for t in threading.enumerate() if t.is_alive()}


def tiny_runs(*lrs: float) -> list[grid.Run]:
  return [grid.Run(f"lr={lr}", TINY, {**OVERRIDES, "optimizer.lr": lr}) for lr in lrs]


@pytest.fixture(scope="module")
def settled(tmp_path_factory):
  """One in-process run first: what JAX and the libraries start once per process then runs."""
  root = tmp_path_factory.mktemp("warm")
  assert backends.run_inprocess(tiny_runs(1e-3), root, progress=lambda _: None) == {
    "lr=0.001": "finished"
  }


def test_a_step_that_raises_leaves_no_handler_and_no_thread(settled, tmp_path, monkeypatch):
  def failing_step(self, statistics):
    def step(*args):
      raise RuntimeError("device lost")

    return step

  monkeypatch.setattr(controller_lib.Controller, "step_fn", failing_step)
  before_handlers, before_threads = handlers(), threads()
  with pytest.raises(RuntimeError, match="device lost"):
    train.train_and_evaluate(grid.load_config(TINY, OVERRIDES), str(tmp_path))
  assert handlers() == before_handlers
  left = threads() - before_threads
  assert not left, f"threads left running: {[t.name for t in left]}"


def test_inprocess_backend_runs_leave_no_threads_behind(settled, tmp_path):
  """Text runs read ahead in grain's threads; one of them fails on a bad line while training."""
  lines = [json.dumps({"text": f"document {i} " * 20}) for i in range(20)]
  (tmp_path / "good.jsonl").write_text("\n".join(lines))
  (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:2], "{not json", *lines[2:]]))
  (tmp_path / "held_out.jsonl").write_text("\n".join(lines[:4]))
  text = {
    "data.source": "text_files",
    "data.eval_files": str(tmp_path / "held_out.jsonl"),
    "data.prefetch": 4,
  }
  runs = [
    grid.Run(name, TINY, {**OVERRIDES, **text, "data.files": str(tmp_path / f"{name}.jsonl")})
    for name in ("bad", "good")
  ]
  before_handlers, before_threads = handlers(), threads()
  statuses = backends.run_inprocess(runs, tmp_path, progress=lambda _: None)
  assert statuses == {"bad": "failed", "good": "finished"}
  assert handlers() == before_handlers
  left = threads() - before_threads
  assert not left, f"threads left running: {[t.name for t in left]}"


def test_inprocess_sweep_stops_when_a_run_was_stopped(tmp_path, monkeypatch):
  """A SIGTERM during an in-process run is taken by the run's own handler (it checkpoints and
  returns unfinished): the sweep must stop there, not start the next run."""
  started = []

  def stopped_run(config, workdir):  # what a run stopped by SIGTERM leaves: no done/failed record
    del config
    started.append(workdir)

  monkeypatch.setattr(train, "train_and_evaluate", stopped_run)
  with pytest.raises(backends.Stopped, match=r"lr=0.001 was stopped .* 1 run\(s\) not started"):
    backends.run_inprocess(tiny_runs(1e-3, 2e-3), tmp_path, progress=lambda _: None)
  assert [pathlib.Path(w).name for w in started] == ["lr=0.001"]
