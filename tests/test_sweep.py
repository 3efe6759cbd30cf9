"""Sweeps: grid expansion, manifest, skipping finished runs, and each backend's dry run."""

import json
import pathlib
import subprocess
import sys

import pytest

from launch import grid

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_sweep(path: pathlib.Path, axes: dict) -> str:
  path.write_text(
      "def get_sweep():\n"
      "  return {'config': 'configs/cbs_paper.py:tiny',\n"
      "          'fixed': {'train_tokens': 6144, 'schedule.warmup_tokens': 2048, 'mesh.data': 1,\n"
      "                    'compile_cache_dir': '', 'eval.tokens': 4096},\n"
      f"          'axes': {axes!r}}}\n")
  return str(path)


def sweep(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args], cwd=ROOT, text=True,
                        capture_output=True, timeout=600, check=False)


def test_grid_names_are_deterministic_and_readable(tmp_path):
  runs = grid.expand(grid.load(write_sweep(tmp_path / "s.py", {"batch.size": [16, 32],
                                                               "optimizer.lr": [1e-3, 3e-3]})))
  assert [r.name for r in runs] == ["batch.size=16,optimizer.lr=0.001",
                                    "batch.size=16,optimizer.lr=0.003",
                                    "batch.size=32,optimizer.lr=0.001",
                                    "batch.size=32,optimizer.lr=0.003"]
  assert runs[1].overrides["optimizer.lr"] == 3e-3 and runs[1].overrides["mesh.data"] == 1


def test_local_sweep_runs_writes_the_manifest_and_skips_finished_runs(tmp_path):
  path = write_sweep(tmp_path / "s.py", {"batch.size": [16, 32]})
  first = sweep([f"--sweep={path}", f"--root={tmp_path / 'root'}", "--backend=local"])
  assert first.returncode == 0, first.stderr[-2000:]
  manifest = json.loads((tmp_path / "root" / "manifest.json").read_text())
  assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
  assert all((pathlib.Path(r["workdir"]) / "metrics.jsonl").exists() for r in manifest["runs"])
  again = sweep([f"--sweep={path}", f"--root={tmp_path / 'root'}", "--backend=local"])
  assert "2 runs, 2 finished, 0 to run" in again.stdout
  # The in-process backend builds the same configs from the overrides: identical training.
  one = write_sweep(tmp_path / "one.py", {"batch.size": [32]})
  inprocess = sweep([f"--sweep={one}", f"--root={tmp_path / 'inproc'}", "--backend=inprocess"])
  assert inprocess.returncode == 0, inprocess.stderr[-2000:]
  def losses(root, name):
    lines = (tmp_path / root / name / "metrics.jsonl").read_text().splitlines()
    return [[r.get("loss"), r.get("eval_loss")] for r in map(json.loads, lines)]

  assert losses("root", "batch.size=32") == losses("inproc", "batch.size=32")


def test_inprocess_sweep_rejects_a_bad_override_before_running(tmp_path):
  path = write_sweep(tmp_path / "s.py", {"batch.size": [16], "optimizer.lrr": [1e-3]})
  result = sweep([f"--sweep={path}", f"--root={tmp_path / 'root'}", "--backend=inprocess"])
  assert result.returncode == 2
  assert "no key 'optimizer.lrr'" in result.stderr.strip().splitlines()[-1]
  assert not list((tmp_path / "root").glob("*/config.json"))


@pytest.mark.parametrize("backend,extra,expected", [
    ("local", [], "[1/2]"),
    ("gpus", ["--num_gpus=2"], "CUDA_VISIBLE_DEVICES="),
    ("tpu", ["--tpu=pod", "--zone=us-central2-b"], "gcloud compute tpus tpu-vm ssh pod"),
    ("slurm", ["--nodes=2"], "#SBATCH --array=0-1"),
])
def test_dry_runs_print_commands_and_run_nothing(tmp_path, backend, extra, expected):
  path = write_sweep(tmp_path / "s.py", {"batch.size": [16, 32]})
  result = sweep([f"--sweep={path}", f"--root={tmp_path / 'root'}", f"--backend={backend}",
                  "--dry_run", *extra])
  assert result.returncode == 0, result.stderr[-2000:]
  assert expected in result.stdout and "--config.batch.size=32" in result.stdout
  assert not list((tmp_path / "root").glob("*/metrics.jsonl"))
