"""The reduced studies end to end: runs, reuse on rerun, report, CBS inside the swept range."""

import json
import math
import pathlib

from launch import study
from tests.data import corpus


def test_quick_cbs_study_reports_a_cbs_inside_the_swept_range(tmp_path, capsys):
  root = tmp_path / "cbs"
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  out = capsys.readouterr().out
  assert "3/3 runs done" in out and "report: " in out
  results = json.loads((root / "report" / "results.json").read_text())
  groups = results["groups"]
  assert [g["tokens"] for g in groups] == study.QUICK.budgets
  for g in groups:
    assert math.isfinite(g["cbs"]) and study.QUICK.batches[0] <= g["cbs"] <= study.QUICK.batches[-1]
    assert not g["unreached"]
  assert "tokens" in results["scaling"]
  html = (root / "report" / "report.html").read_text()
  assert html.count("data:image/png;base64,") >= 2 + len(groups)
  # A rerun trains nothing and reproduces the table.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  assert capsys.readouterr().out.count("reused") == 3
  again = json.loads((root / "report" / "results.json").read_text())["groups"]
  assert [g["cbs"] for g in again] == [g["cbs"] for g in groups]


def test_quick_adaptive_study_compares_schedules_at_equal_tokens(tmp_path):
  root = tmp_path / "adaptive"
  assert study.main(["adaptive", "--quick", "--root", str(root)]) == 0
  table = json.loads((root / "report" / "results.json").read_text())["schedules"]
  rows = {r["run"]: r for r in table["rows"]}
  small, large = (study.make_run(b, study.lr_center(b), {}).name for b in (4, 16))
  assert set(rows) == {small, large, "schedule=ramp", "schedule=norm"}
  assert rows["schedule=ramp"]["final_batch"] == 16 and rows["schedule=ramp"]["initial_batch"] == 4
  assert rows["schedule=norm"]["final_batch"] > 4
  for r in rows.values():
    assert all(math.isfinite(v) for v in r["losses"])
  # At equal tokens, a bigger batch has taken fewer steps.
  assert rows[large]["steps"][-1] < rows["schedule=norm"]["steps"][-1] < rows[small]["steps"][-1]
  assert pathlib.Path(root / "report" / "schedules.png").stat().st_size > 10_000


def test_quick_cbs_study_on_the_users_config_and_text_files(tmp_path, capsys):
  for f in range(2):
    (tmp_path / f"part{f}.jsonl").write_text("".join(
        json.dumps({"text": corpus.document(f * 300 + i)}) + "\n" for i in range(300)))
  (tmp_path / "held_out.jsonl").write_text("".join(
      json.dumps({"text": corpus.document(10_000 + i)}) + "\n" for i in range(60)))
  root = tmp_path / "cbs"
  args = ["cbs", "--quick", "--root", str(root), "--config=configs/tiny.py",
          "--config.data.source=text_files", f"--config.data.files={tmp_path}/part*.jsonl",
          f"--config.data.eval_files={tmp_path}/held_out.jsonl"]
  assert study.main(args) == 0
  assert "report: " in capsys.readouterr().out
  groups = json.loads((root / "report" / "results.json").read_text())["groups"]
  assert [g["tokens"] for g in groups] == study.QUICK.budgets
  assert all(math.isfinite(g["cbs"]) for g in groups)
  run = json.loads((root / "batch.size=4,optimizer.lr=0.00177" / "config.json").read_text())
  assert (run["config"]["data"]["source"], run["config"]["data"]["vocab"]) == ("text_files", "byte")
  assert json.loads((root / "study.json").read_text())["config"] == "configs/tiny.py"
  # The root now belongs to this model and data; a bad key is named in one line.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 2
  assert "holds a study of" in capsys.readouterr().err
  assert study.main(["cbs", "--quick", "--root", str(tmp_path / "other"), *args[4:],
                     "--config.data.sourcee=x"]) == 2
  assert "no key 'data.sourcee'" in capsys.readouterr().err.strip().splitlines()[-1]
