"""The reduced studies end to end: runs, reuse on rerun, report, CBS inside the swept range."""

import dataclasses
import json
import math

import pytest

from launch import cbs_study
from launch import study
from tests.data import corpus


def test_quick_cbs_study_answers_data_or_model_size(tmp_path, capsys):
  root = tmp_path / "cbs"
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  out = capsys.readouterr().out
  assert "100.0% of the work, 11/11 runs" in out and "report: " in out and "ETA ~" in out
  results = json.loads((root / "report" / "results.json").read_text())
  groups = results["groups"]
  plan = study.QUICK
  assert len({g["n_params"] for g in groups}) == len(plan.widths) >= 2
  assert sorted({g["tokens"] for g in groups}) == plan.budgets and len(plan.budgets) >= 2
  for g in groups:
    assert math.isfinite(g["cbs"]) and plan.batches[0] <= g["cbs"] <= plan.batches[-1]
    assert not g["unreached"]
  answer = results["answer"]
  for key in ("alpha", "beta"):
    lo, hi = answer[f"{key}_ci"]
    assert math.isfinite(answer[key]) and lo <= answer[key] <= hi
  assert "coupled" in answer and answer["sentence"].startswith("At this scale the CBS")
  md = (root / "report" / "report.md").read_text()
  assert md.index("## Answer: does the CBS scale") < md.index("## CBS per model and data budget")
  assert "(cbs_vs_n_and_d.png)" in md and "## Protocol ablation" in md
  assert (root / "report" / "cbs_vs_n_and_d.png").stat().st_size > 10_000
  ablation = results["ablation"]
  assert [r["batch_size"] for r in ablation["schedules"]] == list(plan.ablation_batches)
  assert all(math.isfinite(r[k]) for r in ablation["schedules"] for k in ("cosine", "wsd"))
  assert [r["batch_size"] for r in ablation["b2"]] == list(plan.b2_batches)
  # A rerun trains nothing and reproduces the table.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  assert capsys.readouterr().out.count("reused") == 11
  again = json.loads((root / "report" / "results.json").read_text())["groups"]
  assert [g["cbs"] for g in again] == [g["cbs"] for g in groups]


def test_quick_cbs_study_on_the_users_config_and_text_files(tmp_path, capsys, monkeypatch):
  # One model and no ablation: the plan's breadth is the test above's; this one checks the data.
  monkeypatch.setattr(study, "QUICK", dataclasses.replace(
      study.QUICK, widths=(1.0,), ablation_batches=(), b2_batches=()))
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
  assert sorted({g["tokens"] for g in groups}) == study.QUICK.budgets
  assert all(math.isfinite(g["cbs"]) for g in groups)
  run = json.loads((root / "d_model=64,batch.size=4,optimizer.lr=0.00354" / "config.json")
                   .read_text())
  assert (run["config"]["data"]["source"], run["config"]["data"]["vocab"]) == ("text_files", "byte")
  assert json.loads((root / "study.json").read_text())["config"] == "configs/tiny.py"
  # The root now belongs to this model and data; a bad key is named in one line.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 2
  assert "holds a study of" in capsys.readouterr().err
  assert study.main(["cbs", "--quick", "--root", str(tmp_path / "other"), *args[4:],
                     "--config.data.sourcee=x"]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
      "data.sourcee is not a config key; did you mean data.source?")


class _Run:  # what beyond_edge reads of a run
  def __init__(self, lr: float, score: float):
    self.config, self.score = {"optimizer": {"lr": lr}}, score


@pytest.mark.parametrize("scores,expected", [
    ({1.0: 5.0, 2.0: 4.0, 4.0: 3.0}, [8.0]),  # best at the largest rate: go up by the grid's ratio
    ({1.0: 3.0, 2.0: 4.0, 4.0: 5.0}, [0.5]),  # best at the smallest: go down
    ({1.0: 5.0, 2.0: 3.0, 4.0: 4.0}, []),  # interior: done
    ({1.0: math.nan, 2.0: math.nan}, []),  # nothing reached the target: nothing to extend
    ({1.0: math.nan, 2.0: 4.0, 4.0: math.nan}, [])])  # unreached runs do not count as best
def test_the_learning_rate_grid_grows_past_an_edge_best(scores, expected):
  runs = [_Run(lr, s) for lr, s in scores.items()]
  assert cbs_study.beyond_edge(runs, lambda r: r.score) == expected
