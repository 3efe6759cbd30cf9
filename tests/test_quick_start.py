"""The README's quick-start run, as written, ends at the losses the README states.

The run is deterministic (seeded data, initialisation and order on one CPU device), so the figures
printed in the README are checked to their printed precision against the run itself.
"""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The sentence of the README's quick start that states what the run ends at.
RESULT = re.compile(
  r"eval loss (?P<eval_loss>\d+\.\d+) \(EWA 0\.9: (?P<ewa>\d+\.\d+)\) against "
  r"the entropy-rate floor (?P<entropy_rate>\d+\.\d+) \(Bayes floor of the held-out set "
  r"(?P<bayes>\d+\.\d+)\), from (?P<first_loss>\d+\.\d+) at step 1"
)


def quick_start_section() -> str:
  readme = (ROOT / "README.md").read_text()
  return readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def train_command(workdir: pathlib.Path) -> list[str]:
  """The training part of the README's first command, with this interpreter and workdir."""
  first = re.findall(r"```bash\n(.*?)\n```", quick_start_section(), flags=re.S)[0]
  (train,) = [part for part in first.split(" && ") if "cbs.main" in part]
  argv = shlex.split(train)
  assert argv[0] == ".venv/bin/python"
  return [sys.executable] + [
    f"--workdir={workdir}" if arg.startswith("--workdir=") else arg for arg in argv[1:]
  ]


def stated() -> dict[str, str]:
  """The figures the README states for the quick-start run, as printed."""
  found = RESULT.search(" ".join(quick_start_section().split()))
  assert found, "the quick start no longer states the run's losses in the expected sentence"
  return found.groupdict()


def matches(printed: str, measured: float) -> bool:
  """Whether `measured` rounds to `printed` at the number of decimals printed."""
  decimals = len(printed.split(".")[1])
  return abs(measured - float(printed)) <= 0.5 * 10.0**-decimals + 1e-12


@pytest.fixture(scope="module")
def quick_start_run(tmp_path_factory) -> tuple[pathlib.Path, str]:
  """The quick start's run, on one CPU device as on a fresh machine (not the suite's 8 fake
  ones)."""
  workdir = tmp_path_factory.mktemp("quick_start") / "cbs_tiny"
  env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
  done = subprocess.run(
    train_command(workdir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done.stderr


def test_the_readme_states_the_quick_start_runs_own_losses(quick_start_run):
  workdir, _ = quick_start_run
  figures = stated()
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  last_eval = [r for r in records if "eval_loss" in r][-1]
  first_train = [r for r in records if "loss" in r][0]
  floors = json.loads((workdir / "config.json").read_text())["floors"]
  measured = {
    "eval_loss": last_eval["eval_loss"],
    "ewa": last_eval["eval_loss_ewa_0.9"],
    "entropy_rate": floors["entropy_rate"],
    "bayes": floors["eval_bayes_loss"],
    "first_loss": first_train["loss"],
  }
  assert first_train["step"] == 1
  wrong = {
    name: (figures[name], round(value, 6))
    for name, value in measured.items()
    if not matches(figures[name], value)
  }
  assert not wrong, f"README figure (printed, measured) differs from the run: {wrong}"


def test_the_quick_start_console_has_no_line_that_looks_like_an_error(quick_start_run):
  _, stderr = quick_start_run
  for noise in ("E0000", "cuInit", "oneDNN", "absl::InitializeLog", "Traceback", "ERROR"):
    assert noise not in stderr
  assert "finished at step" in stderr
  assert "loss floors of the data: entropy_rate" in stderr
  assert "over entropy_rate" in stderr  # the gap to the floor at each eval
