"""What the tests share: the tiny config of a short run, the records a run wrote, and the command
line run in a child process from the repository root.

Only what several test modules use lives here; a test's own specifics stay in its module.
"""

import collections
import hashlib
import os
import pathlib
import subprocess
import sys

import ml_collections

from cbs.metrics import records
from configs import tiny

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")
STEP_TOKENS = 32 * 64  # configs/tiny.py: batch 32 x seq_len 64


def tiny_config(overrides: dict | None = None) -> ml_collections.ConfigDict:
  """configs/tiny.py with dotted overrides ({"eval.tokens": 4096}), without the persistent
  compile cache, so that each test compiles what it runs."""
  c = tiny.get_config()
  c.compile_cache_dir = ""
  for key, value in (overrides or {}).items():
    *sections, name = key.split(".")
    node = c
    for section in sections:
      node = node[section]
    node[name] = value
  return c


def short_run(steps: int) -> dict:
  """The overrides of a short run: `steps` steps of the tiny batch on one device, a checkpoint
  after each, no evaluation during training (a small held-out set), every step logged."""
  return {
    "mesh.data": 1,
    "train_tokens": steps * STEP_TOKENS,
    "checkpoint.every_tokens": STEP_TOKENS,
    "eval.every_tokens": 0,
    "schedule.warmup_tokens": 0,
    "eval.tokens": 4096,
    "log.every_steps": 1,
  }


def short_run_config(steps: int, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """`tiny_config` of `short_run(steps)`, then `overrides`."""
  return tiny_config({**short_run(steps), **(overrides or {})})


def main_flags(workdir: pathlib.Path, overrides: dict | None = None) -> list[str]:
  """`cbs.main`'s flags for the run `tiny_config(overrides)` describes, in `workdir`."""
  overrides = {"compile_cache_dir": "", **(overrides or {})}
  return [
    f"--config={TINY}",
    f"--workdir={workdir}",
    *(f"--config.{key}={value}" for key, value in overrides.items()),
  ]


def child_env() -> dict[str, str]:
  """The environment of a child process: this checkout's packages first on its path, and, where
  a run names a compile cache, every program cached however fast it compiled, so that a later run
  with the same shapes compiles nothing."""
  path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
  return {**os.environ, "PYTHONPATH": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def run_module(
  module: str, args: list[str], timeout: int = 300, cwd: pathlib.Path = ROOT
) -> subprocess.CompletedProcess:
  """`python -m module args` in `cwd` (the repository root unless given), its output captured;
  never raises on a failed exit, so a test asserts the status and the message."""
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
    env=child_env(),
  )


def run_main(
  args: list[str], timeout: int = 300, cwd: pathlib.Path = ROOT
) -> subprocess.CompletedProcess:
  """The training command line, `python -m cbs.main args`."""
  return run_module("cbs.main", args, timeout, cwd)


def last_line(stream: str) -> str:
  """The line a refusal ends with: its one-line message."""
  return stream.strip().splitlines()[-1]


def records_with(workdir, key: str) -> list[dict]:
  """The run's records that hold `key` (train records hold "loss", eval records "eval_loss")."""
  return [r for r in records.read_records(workdir) if key in r]


def values(workdir, key: str) -> list:
  """`key`'s value in each record that holds it, in order."""
  return [r[key] for r in records_with(workdir, key)]


def last_step(workdir) -> int:
  """The latest step the run's records reached."""
  return max(r["step"] for r in records.read_records(workdir))


def comparable(workdir) -> list[dict]:
  """Every record of the run but its wall-clock timings: what two equal runs share bit for bit."""
  return [records.without_timings(r) for r in records.read_records(workdir)]


def assert_each_step_once(workdir) -> None:
  """metrics.jsonl holds at most one train, one eval and one start record per step."""
  kinds = collections.Counter(
    (r["step"], "train" if "loss" in r else "eval" if "eval_loss" in r else "start")
    for r in records.read_records(workdir)
  )
  assert [k for k, n in kinds.items() if n > 1] == []


def snapshot(workdir: pathlib.Path) -> dict[str, str]:
  """Each file under `workdir` with its hash: equal snapshots mean nothing was written."""
  return {
    str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(workdir.rglob("*"))
    if p.is_file()
  }
