"""The README and its pages under docs/: the quick-start commands are the ones CI runs, they install
the pinned versions, every page is linked and every link resolves, generated tables are the
generators' output."""

import pathlib
import re

from cbs import bad_input_table
from tests.helpers import ROOT

PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def quick_start_commands() -> list[str]:
  readme = (ROOT / "README.md").read_text()
  section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
  commands = quick_start_commands()
  assert len(commands) == 2
  assert "cbs.main --config=configs/tiny.py" in commands[0]
  assert "pytest" in commands[1]


def test_quick_start_installs_the_pinned_versions():
  for command in quick_start_commands():
    (install,) = [part for part in command.split(" && ") if "pip install" in part]
    assert install.endswith(" -c constraints.txt"), install
  pinned = (ROOT / "constraints.txt").read_text().splitlines()
  assert pinned and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line) for line in pinned)


def test_ci_runs_the_readme_test_command_as_written():
  ci_lines = (ROOT / ".ci/run").read_text().splitlines()
  assert quick_start_commands()[1] in ci_lines


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown page's headings."""
  text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # not code's comments
  headings = re.findall(r"^#+ (.*)$", text, flags=re.M)
  return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_docs_page_is_linked_from_the_readme():
  linked = {
    (ROOT / target.split("#")[0]).resolve()
    for target in LINK.findall((ROOT / "README.md").read_text())
  }
  assert PAGES and not [page.name for page in PAGES if page.resolve() not in linked]


def test_every_relative_link_of_the_readme_and_its_pages_resolves():
  broken = []
  for page in [ROOT / "README.md", *PAGES]:
    for target in LINK.findall(page.read_text()):
      if "://" in target:
        continue
      path, _, anchor = target.partition("#")
      resolved = (page.parent / path).resolve() if path else page
      if not resolved.exists() or (anchor and anchor not in _anchors(resolved)):
        broken.append(f"{page.relative_to(ROOT)}: {target}")
  assert not broken


def test_bad_input_table_is_the_generated_one(monkeypatch):
  monkeypatch.chdir(ROOT)  # its examples name the repository's files
  page = (ROOT / "docs/configuration.md").read_text()
  section = page.split("python -m cbs.bad_input_table", 1)[1]
  table = section[section.index(bad_input_table.HEADER[0]) :].split("\n\n", 1)[0]
  assert table.rstrip("\n").splitlines() == bad_input_table.rows()
