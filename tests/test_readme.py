"""The README's quick-start commands are the ones CI runs and the ones that exist."""

import re

from tests.helpers import ROOT


def quick_start_commands() -> list[str]:
  readme = (ROOT / "README.md").read_text()
  section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
  commands = quick_start_commands()
  assert len(commands) == 2
  assert "cbs.main --config=configs/tiny.py" in commands[0]
  assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_as_written():
  ci_lines = (ROOT / ".ci/run").read_text().splitlines()
  assert quick_start_commands()[1] in ci_lines
