"""Which checkpoint a run resumes from: incompatible stops, transient retries, corrupt falls back.

Every resume asserts the step it restored and how many steps the process then trained, so a silent
fresh start fails; no case may rename a checkpoint without evidence that it is damaged.
"""

import errno
import json
import logging
import pathlib
import shutil

import jax
import numpy as np
import pytest

from cbs import convert_checkpoint
from cbs import train
from cbs.checkpoint import checkpoints as checkpoint
from cbs.checkpoint import errors as checkpoint_errors
from cbs.checkpoint import restoring
from cbs.config import validation
from cbs.metrics import records
from tests.data import corpus
from tests.helpers import assert_each_step_once
from tests.helpers import last_line
from tests.helpers import main_flags
from tests.helpers import run_main
from tests.helpers import short_run
from tests.helpers import short_run_config
from tests.helpers import snapshot
from tests.helpers import values


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A finished six-step unrolled run with a checkpoint at every step."""
  workdir = tmp_path_factory.mktemp("six")
  config = short_run_config(6)
  config.checkpoint.keep = 6
  train.train_and_evaluate(config, str(workdir))
  return workdir


def stopped_at_4(six_steps, tmp_path) -> pathlib.Path:
  """The run as a crash after step 4 leaves it: checkpoints 1-4 and the records of steps 1-4."""
  run = tmp_path / "run"
  shutil.copytree(six_steps, run)
  for step in (5, 6):
    shutil.rmtree(run / "checkpoints" / str(step))
  (run / "done.json").unlink()
  records.drop_records_after(run, 4)
  return run


def test_scanned_rerun_of_an_unrolled_run_is_refused_then_converted_and_resumed(
  six_steps, tmp_path
):
  run = stopped_at_4(six_steps, tmp_path)
  before = snapshot(run)
  refused = run_main(
    main_flags(run, {**short_run(6), "model.scan_layers": True, "train.allow_config_change": True})
  )
  assert refused.returncode == 2
  line = last_line(refused.stderr)
  assert line == (
    f"cbs: bad config: checkpoint 4 in {run}/checkpoints does not fit the configured "
    "model: it holds params/blocks where the model has params/layers "
    "(model.scan_layers: False -> True); convert its unrolled blocks to scanned ones "
    f"with `python -m cbs.convert_checkpoint --workdir={run} --scan_layers=True` (or "
    "resume with model.scan_layers=False); nothing was changed"
  )
  assert snapshot(run) == before  # nothing renamed, dropped or written

  assert convert_checkpoint.main([f"--workdir={run}", "--scan_layers=True"]) == 0
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2", "3", "4"]
  original = convert_checkpoint.read_state(run / "checkpoints.unrolled" / "4" / "state")
  converted = convert_checkpoint.read_state(run / "checkpoints" / "4" / "state")
  for i in range(2):  # block i is index i of the stacked arrays, for params, moments and averages
    jax.tree.map(
      np.testing.assert_array_equal,
      jax.tree.map(lambda a, i=i: a[i], converted["opt"][1][0]["mu"]["layers"]),
      original["opt"][1][0]["mu"]["blocks"][str(i)],
    )
  jax.tree.map(
    np.testing.assert_array_equal, convert_checkpoint.convert(converted, False), original
  )  # and back, bit for bit

  config = short_run_config(6)
  config.model.scan_layers = True  # config.json now says so: no allow_config_change needed
  progress = train.train_and_evaluate(config, str(run))
  assert (progress["resumed_from"], progress["steps_run"]) == (4, 2)
  assert_each_step_once(run)
  # The same function of the same numbers: the uninterrupted unrolled run, to rounding.
  np.testing.assert_allclose(values(run, "loss"), values(six_steps, "loss"), rtol=2e-5)
  assert values(run, "loss")[:4] == values(six_steps, "loss")[:4]


@pytest.mark.parametrize(
  "args",
  [
    [],
    ["--workdir=/nonexistent", "--scan_layers=maybe"],
    ["--workdir=/nonexistent", "--scan_layers=True"],
  ],
)
def test_convert_rejects_bad_arguments_in_one_line(args, capsys):
  assert convert_checkpoint.main(args) == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_another_model_is_refused_and_with_allow_config_change_its_checkpoint_too(
  six_steps, tmp_path
):
  run = stopped_at_4(six_steps, tmp_path)
  before = snapshot(run)
  other = short_run_config(6)
  other.model.d_model = 32
  with pytest.raises(
    validation.ConfigError,
    match=r"holds a run with another model/data config "
    r"\(model.d_model: 64 -> 32\)",
  ):
    train.train_and_evaluate(other, str(run))
  other.train.allow_config_change = True
  with pytest.raises(
    validation.ConfigError,
    match=r"checkpoint 4 in .* does not fit the "
    r"configured model: .* is float32\[.*64.*\] in it and float32\[.*32.*\] in "
    r"the model \(model.d_model: 64 -> 32\); nothing was changed$",
  ):
    train.train_and_evaluate(other, str(run))
  assert snapshot(run) == before


def failing_restore(
  monkeypatch, failures: int, error: Exception, sleeps: list[float] | None = None
) -> list[int]:
  """Checkpoints.restore raises `error` on its first `failures` calls; returns the steps tried.

  The waits between attempts go to `sleeps` (a fake clock) if given, else are zero.
  """
  real, tried = checkpoint.Checkpoints.restore, []

  def restore(self, step, abstract_state):
    tried.append(step)
    if len(tried) <= failures:
      raise error
    return real(self, step, abstract_state)

  monkeypatch.setattr(checkpoint.Checkpoints, "restore", restore)
  if sleeps is None:
    monkeypatch.setattr(restoring, "RETRY_DELAYS_S", (0.0, 0.0, 0.0))
  else:
    monkeypatch.setattr(restoring, "_sleep", sleeps.append)
  return tried


def test_a_transient_read_error_is_retried_and_the_latest_step_restored(
  six_steps, tmp_path, monkeypatch
):
  run = stopped_at_4(six_steps, tmp_path)
  before = snapshot(run)
  tried = failing_restore(monkeypatch, 2, OSError(errno.EIO, "Input/output error"))
  # 4 steps: finished once restored
  progress = train.train_and_evaluate(short_run_config(4), str(run))
  assert tried == [4, 4, 4]
  assert (progress["resumed_from"], progress["steps_run"], progress["step"]) == (4, 0, 4)
  after = snapshot(run)
  assert json.loads((run / "done.json").read_text()) == {"step": 4, "tokens": 4 * 32 * 64}
  del after["done.json"]  # the restored run is complete under this config, and says so
  assert after == before  # nothing set aside


def test_a_persistent_read_error_stops_without_renaming_anything(six_steps, tmp_path, monkeypatch):
  run = stopped_at_4(six_steps, tmp_path)
  before = snapshot(run)
  sleeps = []
  tried = failing_restore(
    monkeypatch, 1_000, OSError(errno.ETIMEDOUT, "Connection timed out"), sleeps
  )
  with pytest.raises(
    checkpoint_errors.Unreadable,
    match=r"checkpoint 4 in .* could not be read in 4 "
    r"attempts \(TimeoutError: \[Errno 110\] Connection timed out\); nothing was "
    r"changed",
  ):
    train.train_and_evaluate(short_run_config(6), str(run))
  assert tried == [4, 4, 4, 4]
  assert sleeps == [2.0, 8.0, 30.0]  # the waits before the 2nd, 3rd and 4th attempt
  assert snapshot(run) == before


def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_previous_one_used(
  six_steps, tmp_path, caplog
):
  run = stopped_at_4(six_steps, tmp_path)
  for path in (run / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and "ocdbt.process_0" in str(path):
      path.write_bytes(b"")  # cut short, as by a full disk
  with caplog.at_level(logging.WARNING):
    progress = train.train_and_evaluate(short_run_config(6), str(run))
  assert (progress["resumed_from"], progress["steps_run"]) == (3, 3)
  assert "checkpoint 4 in" in caplog.text and "restoring step 3 instead" in caplog.text
  assert (run / "checkpoints" / "corrupt_4").is_dir()
  assert values(run, "loss") == values(six_steps, "loss")
  assert_each_step_once(run)


@pytest.mark.parametrize("lost", ["data", "data/process_0-of-1.json"])
def test_a_checkpoint_missing_an_item_is_set_aside_and_the_previous_one_used(
  six_steps, tmp_path, caplog, lost
):
  run = stopped_at_4(six_steps, tmp_path)
  shutil.rmtree(run / "checkpoints" / "4" / lost, ignore_errors=True)
  (run / "checkpoints" / "4" / lost).unlink(missing_ok=True)
  assert not (run / "checkpoints" / "4" / lost).exists()
  with caplog.at_level(logging.WARNING):
    progress = train.train_and_evaluate(short_run_config(6), str(run))
  assert (progress["resumed_from"], progress["steps_run"]) == (3, 3)
  assert "restoring step 3 instead" in caplog.text
  assert (run / "checkpoints" / "corrupt_4").is_dir()
  assert values(run, "loss") == values(six_steps, "loss")
  assert_each_step_once(run)


def test_a_checkpoint_of_another_host_count_is_refused_through_the_command_line(
  six_steps, tmp_path
):
  run = stopped_at_4(six_steps, tmp_path)
  for step in (1, 2, 3, 4):  # as a two-host run writes them
    data = run / "checkpoints" / str(step) / "data"
    position = (data / "process_0-of-1.json").read_text()
    (data / "process_0-of-1.json").unlink()
    for i in range(2):
      (data / f"process_{i}-of-2.json").write_text(position)
  before = snapshot(run)
  refused = run_main(main_flags(run, {**short_run(6), "schedule.warmup_tokens": 0}))
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert last_line(refused.stderr) == (
    "cbs: checkpoint 4 was written by 2 host(s) and this run has 1: each host's data position "
    "belongs to its own shard of the data, so resume it on the same number of hosts"
  )
  assert snapshot(run) == before


def test_no_silent_fresh_start_while_checkpoints_exist(six_steps, tmp_path):
  run = stopped_at_4(six_steps, tmp_path)
  for step in (1, 2, 3, 4):
    (run / "checkpoints" / str(step) / "progress" / "metadata").write_text('{"step": ')
  for _ in range(2):  # the second time every checkpoint is already set aside: still no restart
    with pytest.raises(
      checkpoint_errors.NoneRestorable,
      match=r"no checkpoint in .* restores \(set "
      r"aside: corrupt_1, corrupt_2, corrupt_3, corrupt_4\); set "
      r"train.restart_if_unrestorable=True to start over",
    ):
      train.train_and_evaluate(short_run_config(6), str(run))
  assert len(values(run, "loss")) == 4  # the records are left as they were
  config = short_run_config(2)
  config.train.restart_if_unrestorable = True
  progress = train.train_and_evaluate(config, str(run))
  assert (progress["resumed_from"], progress["steps_run"]) == (None, 2)
  # the old records of steps 1-4 are gone
  assert values(run, "loss") == values(six_steps, "loss")[:2]
  assert_each_step_once(run)


@pytest.mark.parametrize(
  "error,verdict",
  [
    (FileNotFoundError("state/_METADATA"), restoring.Verdict.CORRUPT),
    (json.JSONDecodeError("Expecting value", "", 0), restoring.Verdict.CORRUPT),
    (ValueError('OUT_OF_RANGE: Error reading "params.embed" in OCDBT'), restoring.Verdict.CORRUPT),
    (ValueError("DATA_LOSS: checksum mismatch"), restoring.Verdict.CORRUPT),
    (ValueError("UNAVAILABLE: connection reset"), restoring.Verdict.TRANSIENT),
    (ValueError("DEADLINE_EXCEEDED: read timed out"), restoring.Verdict.TRANSIENT),
    (PermissionError(errno.EACCES, "denied"), restoring.Verdict.TRANSIENT),
    (RuntimeError("anything not understood"), restoring.Verdict.TRANSIENT),
  ],
)
def test_only_evidence_of_damage_counts_as_corrupt(error, verdict):
  assert restoring.classify(error) == verdict
  try:  # orbax wraps the TensorStore error, which stays visible as the cause
    raise Exception("Encountered error while reading array index") from error
  except Exception as wrapped:
    assert restoring.classify(wrapped) == verdict


def test_another_seed_is_refused_naming_it(six_steps, tmp_path):
  run = stopped_at_4(six_steps, tmp_path)
  before = snapshot(run)
  config = short_run_config(6)
  config.seed = 1
  with pytest.raises(
    validation.ConfigError,
    match=r"^checkpoint 4 in .*/checkpoints was written "
    r"on other data \(seed 0 -> 1\); resume on the same data, or set "
    r"train.allow_data_change=True to go on with this data from the start of an "
    r"epoch; nothing was changed$",
  ):
    train.train_and_evaluate(config, str(run))
  assert snapshot(run) == before


def text_config(pattern: str, steps: int):
  config = short_run_config(steps)
  config.data.source, config.data.files, config.data.prefetch = "text_files", pattern, 4
  return config


def test_files_that_changed_under_a_glob_are_refused_or_deliberately_read_anew(tmp_path, caplog):
  corpus_dir = tmp_path / "corpus"
  corpus_dir.mkdir()
  corpus.write_jsonl(corpus_dir, files=4, per_file=60)
  pattern = str(corpus_dir / "*.jsonl")
  run = tmp_path / "run"
  train.train_and_evaluate(text_config(pattern, 2), str(run))
  saved = checkpoint.Checkpoints(run, 3)
  assert saved.progress(2)["data_identity"]["held_out"] == [
    [str(corpus_dir / "part3.jsonl"), (corpus_dir / "part3.jsonl").stat().st_size]
  ]
  saved.close()
  (run / "done.json").unlink()
  before = snapshot(run)
  shutil.copy(corpus_dir / "part0.jsonl", corpus_dir / "part4.jsonl")  # one more file appears
  with pytest.raises(
    validation.ConfigError,
    match=r"^checkpoint 2 in .* was written on other "
    r"data \(held-out files \+part4.jsonl, -part3.jsonl; train files "
    r"\+part3.jsonl\); resume on the same data",
  ):
    train.train_and_evaluate(text_config(pattern, 4), str(run))
  assert snapshot(run) == before

  allowed = text_config(pattern, 4)
  allowed.train.allow_data_change = True
  with caplog.at_level(logging.WARNING):
    progress = train.train_and_evaluate(allowed, str(run))
  assert (progress["resumed_from"], progress["steps_run"]) == (2, 2)
  assert "train.allow_data_change=True: reading the new data from the start of an epoch" in (
    caplog.text
  )
  assert_each_step_once(run)
  # The new data's stream started over: two steps in, it is where a fresh run's is after two.
  train.train_and_evaluate(text_config(pattern, 2), str(tmp_path / "fresh"))
  resumed, fresh = checkpoint.Checkpoints(run, 3), checkpoint.Checkpoints(tmp_path / "fresh", 3)
  assert resumed.progress(4)["data"] == fresh.progress(2)["data"]
  assert resumed.progress(4)["data_identity"] == fresh.progress(2)["data_identity"]
  resumed.close()
  fresh.close()
