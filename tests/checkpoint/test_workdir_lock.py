"""One writer per workdir: a live holder is refused by name, a dead one is taken over."""

import json
import logging
import os
import socket

import pytest

from cbs import train
from cbs.checkpoint import workdir_lock
from tests.helpers import last_line
from tests.helpers import main_flags
from tests.helpers import run_main
from tests.helpers import short_run_config
from tests.helpers import snapshot


def test_a_second_run_is_refused_in_one_line_naming_the_holder_and_writes_nothing(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "keep.txt").write_text("a file of the running run")
  with workdir_lock.Lock(run).acquire():
    holder = json.loads((run / workdir_lock.LOCK_FILE).read_text())
    assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
    before = snapshot(run)
    refused = run_main(
      main_flags(
        run,
        {"mesh.data": 1, "train_tokens": 2048, "schedule.warmup_tokens": 0, "eval.tokens": 4096},
      )
    )
    assert refused.returncode == 2
    assert last_line(refused.stderr) == (
      f"cbs: workdir {run} is in use by pid {os.getpid()} on {socket.gethostname()}, started "
      f"{holder['started']}; wait for it to end or stop it (a run that died leaves no lock "
      "behind)"
    )
    assert snapshot(run) == before  # no config, record, checkpoint or lock change
    with pytest.raises(workdir_lock.WorkdirBusy, match="is in use by pid"):
      train.train_and_evaluate(short_run_config(1), str(run))
    assert snapshot(run) == before
  assert not (run / workdir_lock.LOCK_FILE).exists()  # released: the next run may start


def test_a_dead_holders_lock_is_taken_over_and_logged(tmp_path, caplog):
  dead = {"host": "vm-7", "pid": 4242, "started": "2026-01-01T00:00:00+00:00", "heartbeat": 0.0}
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(dead))  # no process holds it
  with caplog.at_level(logging.WARNING):
    lock = workdir_lock.Lock(tmp_path).acquire()
  assert (
    f"took over the lock of workdir {tmp_path} from pid 4242 on vm-7, started "
    "2026-01-01T00:00:00+00:00, which is no longer running"
  ) in caplog.text
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert workdir_lock.live_holder(tmp_path).pid == os.getpid()
  lock.release()
  assert workdir_lock.live_holder(tmp_path) is None


def test_object_store_locks_refuse_a_fresh_heartbeat_and_take_over_a_stale_one(
  tmp_path, monkeypatch
):
  """Check-then-write with heartbeats, on a local path standing in for gs://."""
  monkeypatch.setattr(workdir_lock, "_is_local", lambda workdir: False)
  now = [1000.0]

  def clock() -> float:
    return now[0]

  other = {"host": "vm-1", "pid": 7, "started": "2026-01-01T00:00:00+00:00", "heartbeat": 1000.0}
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(other))
  now[0] += workdir_lock.STALE_S - 1
  with pytest.raises(workdir_lock.WorkdirBusy, match="in use by pid 7 on vm-1"):
    workdir_lock.Lock(tmp_path, clock).acquire()
  assert workdir_lock.live_holder(tmp_path, clock).pid == 7
  now[0] += 2
  assert workdir_lock.live_holder(tmp_path, clock) is None
  with workdir_lock.Lock(tmp_path, clock).acquire():
    mine = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
    assert (mine["pid"], mine["heartbeat"]) == (os.getpid(), now[0])
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
