"""Two jax.distributed processes on localhost (4 CPU devices each), started by hand through the
command line: they train like one 8-device process, and a run killed with SIGKILL and started again
continues bit for bit like an uninterrupted two-process run, on text files and on prepared shards,
also while the batch grows, while the hosts' data positions differ, and when the latest checkpoint
is damaged on one host only (both hosts set it aside and resume from the previous one)."""

import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from cbs import train
from cbs.data import prepare
from tests.data import corpus
from tests.helpers import ROOT
from tests.helpers import STEP_TOKENS
from tests.helpers import comparable
from tests.helpers import last_step
from tests.helpers import main_flags
from tests.helpers import tiny_config
from tests.helpers import values

BASE = {
  "mesh.data": 8,
  "model.mlp_dim": 128,
  "log.every_steps": 1,
  "schedule.warmup_tokens": 0,
  "eval.tokens": 4096,
}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(
  workdir: pathlib.Path, overrides: dict, pause_after_saves: int = 0, skewed_host: int = -1
):
  port = free_port()
  return [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "tests.integration.multiprocess_worker",
        str(pause_after_saves),
        str(skewed_host),
        *main_flags(workdir, overrides),
        f"--config.mesh.coordinator=localhost:{port}",
        "--config.mesh.num_processes=2",
        f"--config.mesh.process_id={i}",
      ],
      cwd=ROOT,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]


def finish(workers) -> list[str]:
  """Waits for both processes to succeed; their logs."""
  errors = [w.communicate(timeout=300)[1] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  return errors


def kill_when_paused(workers, workdir: pathlib.Path) -> int:
  """SIGKILLs both processes once both hang after their checkpoint; returns that step."""
  markers = [workdir / f"paused_{i}" for i in range(2)]
  deadline = time.monotonic() + 300
  while not all(m.exists() and m.read_text() for m in markers):
    assert all(w.poll() is None for w in workers), [w.communicate()[1][-3000:] for w in workers]
    assert time.monotonic() < deadline, "the run never reached its pause"
    time.sleep(0.2)
  for w in workers:
    w.send_signal(signal.SIGKILL)
    w.communicate(timeout=60)
  steps = {int(m.read_text()) for m in markers}
  assert len(steps) == 1
  return steps.pop()


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  overrides = {**BASE, "train_tokens": 5 * STEP_TOKENS, "eval.every_tokens": 0}
  finish(start(tmp_path / "two", overrides))
  train.train_and_evaluate(tiny_config(overrides), str(tmp_path / "one"))
  for key in ("loss", "eval_loss"):
    two, one = (values(tmp_path / d, key) for d in ("two", "one"))
    assert len(two) == len(one) > 0
    np.testing.assert_allclose(two, one, rtol=2e-5)


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
  return corpus.write_jsonl(tmp_path_factory.mktemp("mp_text"), files=5, per_file=120)


@pytest.mark.parametrize("source", ["text_files", "prepared"])
def test_a_killed_two_process_run_resumes_bit_for_bit(tmp_path, text_corpus, source):
  overrides = {
    **BASE,
    "data.source": source,
    "train_tokens": 8 * STEP_TOKENS,
    "checkpoint.every_tokens": 2 * STEP_TOKENS,
    "eval.every_tokens": 4 * STEP_TOKENS,
  }
  if source == "text_files":
    overrides["data.files"] = ",".join(text_corpus)
    # The batch grows 16 -> 32 before the kill and 32 -> 64 after it.
    overrides.update(
      {
        "batch.size": 16,
        "batch.max_size": 64,
        "batch.schedule": "ramp",
        "batch.ramp": f"((0, 16), ({STEP_TOKENS}, 32), ({5 * STEP_TOKENS}, 64))",
      }
    )
    skewed = -1
  else:
    prepare.prepare(text_corpus, "byte", str(tmp_path / "prepared"), workers=1)
    overrides["data.prepared_dir"] = str(tmp_path / "prepared")
    skewed = 1  # host 1 is one example ahead: the hosts' positions differ
  finish(start(tmp_path / "whole", overrides, skewed_host=skewed))
  killed = start(tmp_path / "killed", overrides, pause_after_saves=2, skewed_host=skewed)
  step = kill_when_paused(killed, tmp_path / "killed")
  assert not (tmp_path / "killed" / "done.json").exists()  # the kill interrupted the run
  assert last_step(tmp_path / "killed") == step
  restored = step
  if source == "prepared":  # host 1's position in the latest checkpoint is lost
    (tmp_path / "killed" / "checkpoints" / str(step) / "data" / "process_1-of-2.json").unlink()
    restored = step - 2
  logs = finish(start(tmp_path / "killed", overrides, skewed_host=skewed))
  whole, resumed = comparable(tmp_path / "whole"), comparable(tmp_path / "killed")
  last = whole[-1]["step"]
  for log in logs:  # both hosts restored the same step, and trained only what followed
    assert f"resumed from step {restored} (" in log
    assert f"finished at step {last} (" in log
    assert f", {last - restored} steps in this process)" in log
  if restored != step:
    assert f"checkpoint {step} in" in logs[1] and f"restoring step {restored} instead" in logs[1]
    assert (tmp_path / "killed" / "checkpoints" / f"corrupt_{step}").is_dir()
  assert resumed == whole  # every train and eval record, bit for bit
  assert step < whole[-1]["step"] and any("eval_loss" in r for r in whole)
  sizes = [r["batch_size"] for r in whole if "batch_size" in r]
  if source == "text_files":
    assert sizes[0] == 16 and sizes[-1] == 64
    assert [r["batch_size"] for r in whole if r.get("step") == step and "batch_size" in r] == [32]
