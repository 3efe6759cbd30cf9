"""Sweeps: grid expansion, manifest, skipping finished runs, and each backend's dry run."""

import json
import pathlib
import shlex
import shutil
import subprocess

import pytest
from etils import epath

from analysis import measure
from analysis import runs as runs_lib
from cbs.checkpoint import workdir_lock
from cbs.metrics import records
from launch import grid
from launch import outcome
from launch import status_table
from tests.analysis import fake_runs
from tests.helpers import last_line
from tests.helpers import run_module


def write_sweep(path: pathlib.Path, axes: dict) -> str:
  path.write_text(
    "def get_sweep():\n"
    "  return {'config': 'configs/cbs_paper.py:tiny',\n"
    "          'fixed': {'train_tokens': 6144, 'schedule.warmup_tokens': 2048, 'mesh.data': 1,\n"
    "                    'compile_cache_dir': '', 'eval.tokens': 4096},\n"
    f"          'axes': {axes!r}}}\n"
  )
  return str(path)


def sweep(args: list[str]) -> subprocess.CompletedProcess:
  return run_module("launch.sweep", args, timeout=600)


def test_grid_names_are_deterministic_and_readable(tmp_path):
  runs = grid.expand(
    grid.load(
      write_sweep(tmp_path / "s.py", {"batch.size": [16, 32], "optimizer.lr": [1e-3, 3e-3]})
    )
  )
  assert [r.name for r in runs] == [
    "batch.size=16,optimizer.lr=0.001",
    "batch.size=16,optimizer.lr=0.003",
    "batch.size=32,optimizer.lr=0.001",
    "batch.size=32,optimizer.lr=0.003",
  ]
  assert runs[1].overrides["optimizer.lr"] == 3e-3 and runs[1].overrides["mesh.data"] == 1


def test_local_sweep_records_a_diverging_run_goes_on_and_skips_settled_runs(tmp_path):
  path = write_sweep(tmp_path / "s.py", {"optimizer.lr": [1e30, 3.16e-3]})
  diverging, good = "optimizer.lr=1e+30", "optimizer.lr=0.00316"
  root = tmp_path / "root"
  first = sweep([f"--sweep={path}", f"--root={root}", "--backend=local"])
  assert first.returncode == 0, first.stderr[-2000:]
  assert f"run {diverging} failed: cbs: non-finite loss or gradient at step" in first.stdout
  manifest = {r["name"]: r for r in json.loads((root / "manifest.json").read_text())["runs"]}
  assert [manifest[n]["status"] for n in (diverging, good)] == ["failed", "finished"]
  failed = json.loads((root / diverging / "failed.json").read_text())
  assert failed["exit_code"] == 1 and failed["reason"].startswith("cbs: non-finite loss")
  assert manifest[diverging]["reason"] == failed["reason"]
  assert (root / good / "done.json").exists()
  again = sweep([f"--sweep={path}", f"--root={root}", "--backend=local"])
  assert "2 runs, 1 finished, 1 failed, 0 to run" in again.stdout and "[1/" not in again.stdout
  status = sweep([f"--root={root}", "--status"])
  table = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:3]}
  assert table[diverging][1:3] == ["failed", "6,144"]
  assert table[diverging][4:6] == ["cbs:", "non-finite"]
  assert table[good][1:3] == ["finished", "6,144"] and 2 < float(table[good][3]) < 6
  assert status.stdout.strip().endswith("1 finished, 1 failed")
  retry = sweep(
    [f"--sweep={path}", f"--root={root}", "--backend=local", "--retry_failed", "--dry_run"]
  )
  assert "2 runs, 1 finished, 1 failed, 1 to run" in retry.stdout and "[1/1]" in retry.stdout
  assert (root / diverging / "failed.json").exists()  # a dry run changes nothing
  # The in-process backend builds the same config from the overrides: identical training.
  one = write_sweep(tmp_path / "one.py", {"optimizer.lr": [3.16e-3]})
  inprocess = sweep([f"--sweep={one}", f"--root={tmp_path / 'inproc'}", "--backend=inprocess"])
  assert inprocess.returncode == 0, inprocess.stderr[-2000:]

  def losses(root, name):
    return [
      [r.get("loss"), r.get("eval_loss")] for r in records.read_records(tmp_path / root / name)
    ]

  assert losses("root", good) == losses("inproc", good)


@pytest.mark.parametrize(
  "script,reason,code",
  [
    ("echo starting; echo 'RuntimeError: boom' >&2; exit 3", "RuntimeError: boom", 3),
    ("echo 'allocating' >&2; kill -9 $$", "allocating; killed by SIGKILL (exit code -9)", -9),
  ],
)
def test_a_remote_run_records_its_own_failure(tmp_path, script, reason, code):
  """The wrapper of tpu and slurm runs: a crash or a kill (the out-of-memory killer) is recorded."""
  workdir = tmp_path / "run"
  result = run_module("launch.outcome", [f"--workdir={workdir}", "--", "bash", "-c", script])
  assert result.returncode == 1
  assert json.loads((workdir / "failed.json").read_text()) == {"reason": reason, "exit_code": code}
  assert outcome.status(workdir) == "failed"


def test_inprocess_sweep_rejects_a_bad_override_before_running(tmp_path):
  path = write_sweep(tmp_path / "s.py", {"batch.size": [16], "optimizer.lrr": [1e-3]})
  result = sweep([f"--sweep={path}", f"--root={tmp_path / 'root'}", "--backend=inprocess"])
  assert result.returncode == 2
  assert last_line(result.stderr).endswith(
    "optimizer.lrr is not a config key; did you mean optimizer.lr?"
  )
  assert not list((tmp_path / "root").glob("*/config.json"))


@pytest.mark.parametrize(
  "backend,extra,expected",
  [
    ("local", [], "[1/2]"),
    ("gpus", ["--num_gpus=2"], "CUDA_VISIBLE_DEVICES="),
    ("tpu", ["--tpu=pod", "--zone=us-central2-b"], "gcloud compute tpus tpu-vm ssh pod"),
    ("slurm", ["--nodes=2"], "#SBATCH --array=0-1"),
  ],
)
def test_dry_runs_print_commands_and_run_nothing(tmp_path, backend, extra, expected):
  path = write_sweep(tmp_path / "s.py", {"batch.size": [16, 32]})
  result = sweep(
    [f"--sweep={path}", f"--root={tmp_path / 'root'}", f"--backend={backend}", "--dry_run", *extra]
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert expected in result.stdout and "--config.batch.size=32" in result.stdout
  assert not list((tmp_path / "root").glob("*/metrics.jsonl"))


# Steps to the target of the authors' released 151M runs (B_opt = 256, context 512): the fewest
# steps over their sweep at each batch size. With a 20% threshold this curve's CBS is about 955.
RELEASED_151M = {
  64: 96_000,
  128: 49_000,
  256: 24_000,
  512: 12_000,
  1024: 7_128,
  2048: 4_350,
  4096: 2_940,
  8192: 2_400,
  16384: 2_300,
}
RELEASED_CBS = 955


def slurm_runs(script: str) -> dict[str, dict]:
  """{workdir name: {flag: value}} of the runs an sbatch array script starts."""
  body = script.split("<<'CBS_RUNS'\n")[1].split("\nCBS_RUNS")[0]
  runs = {}
  for line in body.splitlines():
    flags = dict(a[2:].split("=", 1) for a in shlex.split(line) if a.startswith("--") and "=" in a)
    runs[pathlib.Path(flags["workdir"]).name] = flags
  return runs


def test_two_phase_sweep_reaches_the_target_at_every_batch_and_measures_the_released_cbs(tmp_path):
  path = tmp_path / "s.py"
  path.write_text(
    "def get_sweep():\n"
    "  return {'config': 'configs/cbs_paper.py:151m',\n"
    f"          'axes': {{'batch.size': {list(RELEASED_151M)},\n"
    "                   'optimizer.lr': [1e-3, 3.16e-3]},\n"
    "          'two_phase': {'b_opt': 256, 'extend_lr': 0}}\n"
  )
  root = tmp_path / "root"
  args = [f"--sweep={path}", f"--root={root}", "--backend=slurm", "--dry_run"]
  first = sweep(args)
  assert first.returncode == 0, first.stderr[-2000:]
  assert "phase 1 (reference batch 256): 2 runs, 0 finished, 0 failed, 2 to run" in first.stdout
  assert "phase 2 (16 runs) starts once the reference runs have ended" in first.stdout
  assert set(slurm_runs((root / "phase1.sbatch").read_text())) == {
    "batch.size=256,optimizer.lr=0.001",
    "batch.size=256,optimizer.lr=0.00316",
  }
  # Phase 1 ends: both reference runs trained to D; the faster one sets the target at D.
  target, seq_len = 3.0, 512
  budget = RELEASED_151M[256] * 256 * seq_len
  for lr, reach in ((0.001, 30_000), (0.00316, RELEASED_151M[256])):
    fake_runs.write_target_run(
      root,
      f"batch.size=256,optimizer.lr={lr}",
      256,
      reach,
      target,
      budget,
      RELEASED_151M[256],
      eval_every=120,
      lr=lr,
    )
  second = sweep(args)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "target loss 3:" in second.stdout
  phase2 = slurm_runs((root / "phase2.sbatch").read_text())
  assert len(phase2) == 16
  for name, flags in phase2.items():
    batch = int(name.split(",")[0].split("=")[1])
    assert float(flags["config.train.stop_loss"]) == target
    assert int(flags["config.data_budget_tokens"]) == budget
    assert RELEASED_151M[batch] * batch * seq_len <= int(flags["config.train_tokens"]) <= 8 * budget
  assert int(phase2["batch.size=16384,optimizer.lr=0.001"]["config.train_tokens"]) == 8 * budget
  # A finished run at 512 caps its batch's other run at its steps (plus one eval), and the next
  # batch at 1.1 x those steps: slower runs cannot be the minimum.
  every = 120 * 256 * seq_len
  name = "batch.size=512,optimizer.lr=0.001"
  fake_runs.write_target_run(
    root,
    name,
    512,
    RELEASED_151M[512],
    target,
    budget,
    8 * RELEASED_151M[512],
    eval_every=60,
    stop_loss=target,
  )
  assert sweep(args).returncode == 0
  capped = slurm_runs((root / "phase2.sbatch").read_text())
  assert name not in capped
  tokens_512 = int(capped["batch.size=512,optimizer.lr=0.00316"]["config.train_tokens"])
  assert 12_000 * 512 * seq_len < tokens_512 <= 12_000 * 512 * seq_len + 2 * every
  tokens_1024 = int(capped["batch.size=1024,optimizer.lr=0.001"]["config.train_tokens"])
  assert 13_200 * 1024 * seq_len < tokens_1024 <= 13_200 * 1024 * seq_len + 2 * every
  # The tpu backend starts the same runs; a started (preempted) run resumes with its own length.
  started = root / "batch.size=2048,optimizer.lr=0.001"
  started.mkdir()
  (started / "config.json").write_text(json.dumps({"config": {"train_tokens": 123_456_789}}))
  tpu = sweep([*args[:2], "--backend=tpu", "--tpu=pod", "--zone=z", "--dry_run"])
  lines = {
    n: next(line for line in tpu.stdout.splitlines() if f"--workdir={root / n} " in line)
    for n in ("batch.size=1024,optimizer.lr=0.001", started.name)
  }
  assert f"--config.train_tokens={tokens_1024} " in lines["batch.size=1024,optimizer.lr=0.001"]
  assert "--config.train_tokens=123456789 " in lines[started.name]
  shutil.rmtree(started)
  # Phase 2 ends with the released steps (the other learning rate 30% slower, stopped at its cap);
  # the analysis of the root measures the curve's CBS.
  for batch, reach in RELEASED_151M.items():
    if batch == 256:
      continue
    for lr, slower in ((0.00316, 1.0), (0.001, 1.3)):
      name = f"batch.size={batch},optimizer.lr={lr}"
      if not (root / name).exists():
        steps = int(1.2 * reach) if slower > 1 else 8 * reach
        fake_runs.write_target_run(
          root,
          name,
          batch,
          int(slower * reach),
          target,
          budget,
          steps,
          eval_every=max(1, reach // 200),
          lr=lr,
          stop_loss=target,
        )
  last = sweep(args)
  assert "phase 2 (other batch sizes): 16 runs, 16 finished, 0 failed, 0 to run" in last.stdout
  (group,) = measure.measure(runs_lib.load_sweep(root), b_opt=256)
  best_steps = [b["steps"] for b in group["best"]]
  assert best_steps == pytest.approx(list(RELEASED_151M.values()), rel=1e-3)
  assert abs(group["cbs"] - RELEASED_CBS) < 5 and group["cbs_raw"] == 1024


def test_inprocess_two_phase_sweep_runs_both_phases_in_one_command_despite_failures(tmp_path):
  path = tmp_path / "s.py"
  path.write_text(
    "def get_sweep():\n"
    "  return {'config': 'configs/cbs_paper.py:tiny',\n"
    "          'fixed': {'train_tokens': 4096, 'data_budget_tokens': 4096, 'mesh.data': 1,\n"
    "                    'schedule.warmup_tokens': 1024,\n"
    "                    'compile_cache_dir': '', 'eval.tokens': 2048, 'eval.every_tokens': 1024,\n"
    "                    'eval.per_doubling': 0, 'eval.dense_from_tokens': 0},\n"
    "          'axes': {'batch.size': [8, 16], 'optimizer.lr': [3.16e-3, 1e30]},\n"
    "          'two_phase': {'b_opt': 8, 'extend_lr': 0}}\n"
  )
  root = tmp_path / "root"
  result = sweep([f"--sweep={path}", f"--root={root}", "--backend=inprocess"])
  assert result.returncode == 0, result.stderr[-2000:]
  # A diverging reference run fails without holding phase 2 back; so does a diverging phase-2 run.
  assert "phase 2 (other batch sizes): 2 runs, 0 finished, 0 failed, 2 to run" in result.stdout
  manifest = json.loads((root / "manifest.json").read_text())
  assert [r["status"] for r in manifest["runs"]] == ["finished", "failed"] * 2
  for r in manifest["runs"][1::2]:
    assert r["reason"].startswith("NonFiniteError: non-finite loss or gradient at step")
  reference = runs_lib.load_run(root / "batch.size=8,optimizer.lr=0.00316")
  target = measure.target_loss([reference], 4096)
  assert manifest["two_phase"]["target"] == target
  run = runs_lib.load_run(root / "batch.size=16,optimizer.lr=0.00316")
  # Capped at 1.1 x the reference's 8 steps: 8.8 steps of 1024 tokens, rounded up to the eval
  # cadence, plus one eval; within it the run stops at the first eval at or below the target.
  assert run.config["train"]["stop_loss"] == round(target, 6)
  assert (run.config["train_tokens"], run.config["data_budget_tokens"]) == (10 * 1024, 4096)
  final = run.evals[-1]
  assert run.finished and (
    runs_lib.loss_after(run, final["tokens"], "best") <= round(target, 6)
    or final["tokens"] == 10 * 1024
  )
  again = sweep([f"--sweep={path}", f"--root={root}", "--backend=inprocess"])
  assert "phase 2 (other batch sizes): 2 runs, 1 finished, 1 failed, 0 to run" in again.stdout


def test_two_phase_sweep_extends_the_learning_rate_grid_past_an_edge_best(tmp_path):
  path = tmp_path / "s.py"
  path.write_text(
    "def get_sweep():\n"
    "  return {'config': 'configs/cbs_paper.py:151m',\n"
    "          'axes': {'batch.size': [256, 512, 1024, 2048],\n"
    "                   'optimizer.lr': [1e-3, 2e-3, 4e-3]},\n"
    "          'two_phase': {'b_opt': 256, 'extend_lr': 1}}\n"
  )
  root = tmp_path / "root"
  args = [f"--sweep={path}", f"--root={root}", "--backend=slurm", "--dry_run"]
  assert sweep(args).returncode == 0
  target, seq_len = 3.0, 512
  budget = RELEASED_151M[256] * 256 * seq_len

  def write(batch, lr, reach, **kw):
    fake_runs.write_target_run(
      root,
      f"batch.size={batch},optimizer.lr={lr}",
      batch,
      reach,
      target,
      budget,
      eval_every=max(1, reach // 200),
      lr=lr,
      **kw,
    )

  # The best reference learning rate is the largest swept: the target waits for the next one up.
  for lr, slower in ((0.001, 1.25), (0.002, 1.1), (0.004, 1.0)):
    write(256, lr, int(slower * RELEASED_151M[256]), steps=RELEASED_151M[256])
  second = sweep(args)
  assert second.returncode == 0, second.stderr[-2000:]
  assert "adding batch.size=256,optimizer.lr=0.008" in second.stdout
  assert set(slurm_runs((root / "phase1_lr.sbatch").read_text())) == {
    "batch.size=256,optimizer.lr=0.008"
  }
  assert "phase 2 (9 runs) starts once the reference runs have ended" in second.stdout
  write(256, 0.008, int(1.2 * RELEASED_151M[256]), steps=RELEASED_151M[256])
  third = sweep(args)
  assert "target loss 3:" in third.stdout and "adding" not in third.stdout
  assert len(slurm_runs((root / "phase2.sbatch").read_text())) == 9
  # Phase 2: at batch 1024 the smallest learning rate is the best (40% above the law's steps).
  for batch in (512, 1024, 2048):
    factors = (
      {0.001: 1.4, 0.002: 1.6, 0.004: 1.9}
      if batch == 1024
      else {0.001: 1.3, 0.002: 1.0, 0.004: 1.2}
    )
    for lr, slower in factors.items():
      reach = int(slower * RELEASED_151M[batch])
      write(batch, lr, reach, steps=8 * reach, stop_loss=target)
  fourth = sweep(args)
  assert "adding batch.size=1024,optimizer.lr=0.0005" in fourth.stdout
  (extension,) = slurm_runs((root / "phase2_lr.sbatch").read_text()).values()
  assert float(extension["config.train.stop_loss"]) == target
  # Capped at the steps of the best run of batch 1024 so far (plus one eval).
  assert int(extension["config.train_tokens"]) < 1.5 * RELEASED_151M[1024] * 1024 * seq_len
  (before,) = measure.measure(runs_lib.load_sweep(root), b_opt=256, samples=0)
  assert before["guards"]["batches"][2]["best_lr_at_grid_edge"]
  # The learning rate below the grid is the true optimum: f(1024) and the CBS move.
  write(1024, 0.0005, RELEASED_151M[1024], steps=8 * RELEASED_151M[1024], stop_loss=target)
  last = sweep(args)
  assert "adding" not in last.stdout  # 1024 holds 3 + extend_lr learning rates: the limit
  manifest = json.loads((root / "manifest.json").read_text())
  assert {"batch.size=256,optimizer.lr=0.008", "batch.size=1024,optimizer.lr=0.0005"} <= {
    r["name"] for r in manifest["runs"]
  }
  (after,) = measure.measure(runs_lib.load_sweep(root), b_opt=256, samples=0)
  steps = {row["batch_size"]: row["steps"] for row in after["best"]}
  assert steps[1024] == pytest.approx(RELEASED_151M[1024], rel=1e-3)
  assert before["best"][2]["steps"] == pytest.approx(1.4 * RELEASED_151M[1024], rel=1e-3)
  # An overestimated f(1024) looked like diminishing returns: the CBS was underestimated.
  assert (before["cbs"], after["cbs"]) == (
    pytest.approx(874.0, abs=0.5),
    pytest.approx(993.2, abs=0.5),
  )


def test_a_rerun_shows_runs_still_going_as_running_elsewhere_and_starts_only_the_others(tmp_path):
  path = write_sweep(tmp_path / "s.py", {"optimizer.lr": [1e-3, 3e-3]})
  root = tmp_path / "root"
  (root / "optimizer.lr=0.001").mkdir(parents=True)
  with workdir_lock.Lock(root / "optimizer.lr=0.001").acquire() as lock:
    rerun = sweep([f"--sweep={path}", f"--root={root}", "--backend=local", "--dry_run"])
    holder = workdir_lock.live_holder(lock.workdir)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert "2 runs, 0 finished, 0 failed, 1 running elsewhere, 1 to run" in rerun.stdout
  assert f"  optimizer.lr=0.001: running elsewhere ({holder.describe()})" in rerun.stdout
  assert (
    "optimizer.lr=0.003" in rerun.stdout
    and "--workdir=" + str(root / "optimizer.lr=0.001") not in rerun.stdout
  )
  assert outcome.status(root / "optimizer.lr=0.001") == "pending"  # not failed


def test_status_shows_a_run_held_by_a_live_launch_as_running_elsewhere(tmp_path):
  root = tmp_path / "root"
  for name in ("a", "b"):
    (root / name).mkdir(parents=True)
  (root / "manifest.json").write_text(json.dumps({"runs": [{"name": "a"}, {"name": "b"}]}))
  with workdir_lock.Lock(root / "a").acquire() as lock:
    table = status_table.render(epath.Path(root))
    holder = workdir_lock.live_holder(lock.workdir)
  rows = {line.split()[0]: line for line in table.splitlines()[1:3]}
  assert rows["a"].split()[1:3] == ["running", "elsewhere"] and holder.describe() in rows["a"]
  assert rows["b"].split()[1] == "pending"
  assert table.splitlines()[-1] == "1 pending, 1 running elsewhere"
  assert status_table.render(epath.Path(root)).splitlines()[-1] == "2 pending"  # lock released
