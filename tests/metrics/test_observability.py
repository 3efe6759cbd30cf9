"""What a run shows: grouped TensorBoard tags, a token-axis stream, HParams, profiles, live MFU,
metrics on object stores without rewrites, and a console without error-looking lines."""

import json

import numpy as np
import pytest
from etils import epath
from tensorboard.backend.event_processing import event_accumulator

from cbs import object_store
from cbs import train
from cbs.metrics import flops
from cbs.metrics import perf
from cbs.metrics import records
from cbs.metrics import tensorboard
from cbs.metrics import writers as metrics
from tests.helpers import STEP_TOKENS
from tests.helpers import records_with
from tests.helpers import tiny_config
from tests.helpers import values


def small_config():
  return tiny_config(
    {
      "mesh.data": 1,
      "train_tokens": 24 * STEP_TOKENS,
      "schedule.warmup_tokens": 0,
      "eval.every_tokens": 8 * STEP_TOKENS,
      "eval.tokens": 4096,
      "log.every_steps": 4,
      "optimizer.lr": 2e-3,  # differs from configs/base.py: an hyper-parameter of this run
      "profile.start_tokens": 10 * STEP_TOKENS,
      "profile.steps": 2,
    }
  )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  train.train_and_evaluate(small_config(), str(workdir), stop_after_steps=12)
  train.train_and_evaluate(small_config(), str(workdir))  # resumed: compiles again
  return workdir


def accumulator(path):
  loaded = event_accumulator.EventAccumulator(str(path))
  loaded.Reload()
  return loaded


def test_tensorboard_groups_tags_and_keeps_a_token_axis_stream(run):
  by_step = accumulator(run)
  scalars = by_step.Tags()["scalars"]
  for expected in (
    "train/loss",
    "train/lr",
    "eval/loss",
    "eval/loss_ewa_0.99",
    "batch/size",
    "perf/tokens_per_sec",
    "perf/mfu",
    "perf/step_time",
    "data/floor_entropy_rate",
  ):
    assert expected in scalars
  np.testing.assert_allclose(
    [e.value for e in by_step.Scalars("train/loss")], values(run, "loss"), rtol=1e-6
  )
  by_tokens = accumulator(run / tensorboard.TOKENS_RUN)
  evals = records_with(run, "eval_loss")
  assert [e.step for e in by_tokens.Scalars("eval/loss")] == [r["tokens"] for r in evals]
  assert [e.step for e in by_tokens.Scalars("train/loss")][:2] == [STEP_TOKENS, 2 * STEP_TOKENS]


def test_hyper_parameters_reach_the_hparams_dashboard(run):
  from tensorboard.plugins.hparams import plugin_data_pb2

  content = accumulator(run).PluginTagToContent("hparams")
  start = plugin_data_pb2.HParamsPluginData.FromString(
    content["_hparams_/session_start_info"]
  ).session_start_info
  assert start.hparams["optimizer.lr"].number_value == pytest.approx(2e-3)
  assert start.hparams["batch.size"].number_value == 32  # tiny's, not base's
  assert "optimizer.b2" not in start.hparams  # left at the default


def test_a_profile_window_writes_a_trace(run):
  traces = list((run / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_throughput_after_a_resume_excludes_the_compile_and_mfu_follows_from_it(run):
  logged = records_with(run, "perf_mfu")
  resumed = next(r for r in logged if r["step"] > 12)
  assert resumed["perf_compile_stall_seconds"] > 0  # the resumed process compiled its step ...
  later = np.median([r["tokens_per_sec"] for r in logged if r["step"] > resumed["step"]])
  assert resumed["tokens_per_sec"] > 0.4 * later  # ... and that wait is not counted as training
  peak, _ = flops.device_peak_flops("float32")
  per_token = flops.train_flops_per_token(small_config().model, 32, 64)  # tiny: 32 symbols
  for r in logged:
    assert r["perf_flops_per_sec"] == pytest.approx(r["tokens_per_sec"] * per_token, rel=1e-9)
    assert r["perf_mfu"] == pytest.approx(r["perf_flops_per_sec"] / peak, rel=1e-9)


def test_throughput_after_an_eval_excludes_the_eval(run, monkeypatch):
  # In the run: the log point after each eval but the last (which ends the run) carries its time.
  logged = {r["step"]: r for r in records_with(run, "perf_eval_seconds")}
  evals = [r["step"] for r in records_with(run, "eval_loss")]
  assert evals == [8, 16, 24]
  for step in evals[:-1]:
    assert logged[min(s for s in logged if s > step)]["perf_eval_seconds"] > 0
  # The meter's arithmetic, on a clock the test moves: 2 s training, a 30 s eval, 2 s training.
  clock = [100.0]
  monkeypatch.setattr(perf.time, "monotonic", lambda: clock[0])
  meter = perf.Meter(0, flops_per_token=6.0, peak_flops_per_device=1e6, num_devices=1)
  clock[0] += 2
  meter.step()
  assert meter.read(2000)["tokens_per_sec"] == pytest.approx(1000)
  clock[0] += 30
  meter.evaluating(30.0)
  clock[0] += 2
  meter.step()
  after = meter.read(4000)
  assert after["tokens_per_sec"] == pytest.approx(1000) and after["perf_eval_seconds"] == 30
  assert after["perf_mfu"] == pytest.approx(1000 * 6 / 1e6)


def test_progress_of_a_run_whose_last_step_passes_its_tokens_reads_100_percent(monkeypatch):
  monkeypatch.setattr(metrics.time, "monotonic", lambda: 50.0)
  line = metrics.ProgressLog(total_tokens=1000, start_tokens=0).line(63, 1004, 2.5, 80.0)
  assert "tokens 1k/1k (100.0%)" in line and "ETA 0m00s" in line


def test_metrics_on_an_object_store_are_written_once_and_read_back_in_order(tmp_path, monkeypatch):
  monkeypatch.setattr(object_store, "is_object_store", lambda path: True)
  written = []
  original = epath.Path.write_bytes
  monkeypatch.setattr(
    epath.Path, "write_bytes", lambda self, data: written.append(len(data)) or original(self, data)
  )
  writer = metrics.JsonlWriter(tmp_path / records.METRICS_FILE)
  lines = []
  for step in range(1, 51):
    writer.write_scalars(step, {"loss": 1.0 / step})
    writer.flush()
    lines.append(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
  assert sum(written) == sum(map(len, lines))  # O(N) bytes for N flushes: nothing rewritten
  assert [r["step"] for r in records.read_records(tmp_path)] == list(range(1, 51))
  assert not (tmp_path / records.METRICS_FILE).exists()
  records.drop_records_after(tmp_path, 30)  # a resume from step 30
  resumed = metrics.JsonlWriter(tmp_path / records.METRICS_FILE)
  resumed.write_scalars(31, {"loss": 0.5})
  resumed.flush()
  assert [r["step"] for r in records.read_records(tmp_path)] == list(range(1, 32))


def test_any_run_directory_is_reported_without_a_manifest(run, tmp_path):
  from analysis import cbs as cbs_cli

  assert cbs_cli.main(["report", f"--runs={run}", f"--out={tmp_path}"]) == 0
  results = json.loads((tmp_path / "results.json").read_text())
  last = records_with(run, "loss")[-1]
  (row,) = results["runs"]
  assert (row["steps"], row["tokens"], row["finished"]) == (last["step"], last["tokens"], True)
  assert row["best eval loss"] == min(values(run, row["eval"]))
  assert (tmp_path / "runs.png").stat().st_size > 0 and (tmp_path / "report.html").exists()
  assert cbs_cli.main(["report", f"--runs={tmp_path / 'nothing'}"]) == 2
