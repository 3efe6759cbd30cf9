"""The reduced studies end to end: runs, reuse on rerun, report, CBS inside the swept range."""

import dataclasses
import json
import math

import numpy as np
import pytest

from studies import cbs_sweep
from studies import cli as study
from studies import pilot
from studies import pilot_measure as pilot_analysis
from tests.data import corpus


def test_quick_cbs_study_answers_data_or_model_size(tmp_path, capsys):
  root = tmp_path / "cbs"
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  out = capsys.readouterr().out
  assert "100.0% of the work, 6/6 runs" in out  # the pilot: 3 runs per width
  assert "100.0% of the work, 12/12 runs" in out and "report: " in out and "ETA ~" in out
  results = json.loads((root / "report" / "results.json").read_text())
  groups = results["groups"]
  plan = study.QUICK
  assert len({g["n_params"] for g in groups}) == len(plan.widths) >= 2
  assert sorted({g["tokens"] for g in groups}) == plan.budgets and len(plan.budgets) >= 2
  for g in groups:
    assert math.isfinite(g["cbs"]) and plan.batches[0] <= g["cbs"] <= plan.batches[-1]
    assert not g["unreached"]
    assert 0 < g["target_above_floor"] == pytest.approx(g["target"] - g["bayes_floor"])
  # Both laws against an independent least-squares fit of the groups' own values (computed by
  # analysis.fits, not by the vectorised fits of the answer).
  design = np.array([[1, math.log(g["n_params"]), math.log(g["tokens"])] for g in groups])
  for key, value in (("answer", "cbs"), ("answer_noise_scale", "b_noise")):
    law = results[key]
    (_, alpha, beta), *_ = np.linalg.lstsq(design, np.log([g[value] for g in groups]), rcond=None)
    assert (law["alpha"], law["beta"]) == pytest.approx((alpha, beta), abs=2e-3)
    for name in ("alpha", "beta"):
      lo, hi = law[f"{name}_ci"]
      assert lo < hi and math.isfinite(law["power"][name]) or math.isnan(law["power"][name])
  assert "coupled" in results["answer"] and "At this scale the CBS" in results["answer"]["sentence"]
  md = (root / "report" / "report.md").read_text()
  assert (
    md.index("## Pilot")
    < md.index("## Answer: does the CBS scale")
    < md.index("## CBS per model and data budget")
  )
  assert "b_opt_token_overhead" in md and "B_noise = b / a" in md
  assert "(cbs_vs_n_and_d.png)" in md and "## Protocol ablation" in md
  assert (root / "report" / "cbs_vs_n_and_d.png").stat().st_size > 10_000
  ablation = results["ablation"]
  assert [r["batch_size"] for r in ablation["schedules"]] == list(plan.ablation_batches)
  assert all(math.isfinite(r[k]) for r in ablation["schedules"] for k in ("cosine", "wsd"))
  # A rerun trains nothing and reproduces the table.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 0
  assert capsys.readouterr().out.count("reused") == 18
  again = json.loads((root / "report" / "results.json").read_text())["groups"]
  assert [g["cbs"] for g in again] == [g["cbs"] for g in groups]


def _pilot_rows(losses_at_max: dict[float, float]) -> list:
  """Pilot rows of a language whose loss falls by 0.3 nats from the smallest to the largest D."""
  return [
    pilot_analysis.Width(w, round(64 * w), 1000, loss + 0.3, loss, 10.0, ())
    for w, loss in losses_at_max.items()
  ]


def test_the_study_refuses_widths_that_barely_move_the_loss(tmp_path, capsys, monkeypatch):
  rows = _pilot_rows({0.125: 3.04, 0.25: 2.85, 0.375: 2.83, 0.5: 2.82, 1.0: 2.81})
  monkeypatch.setattr(pilot, "run_pilot", lambda *args: rows)
  assert study.main(["cbs", "--root", str(tmp_path), "--widths=0.375,0.5,1.0"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "widths d_model 24, 32, 64 differ by 0.020 nats" in err[0]
  assert err[0].endswith("use --widths=0.125,0.25,0.375 (d_model 8, 16, 24) instead")
  assert not (tmp_path / "manifest.json").exists()  # nothing of the sweep was started
  assert study.main(["cbs", "--pilot", "--root", str(tmp_path)]) == 2  # 16, 24, 32: 0.03 / 0.3
  monkeypatch.setattr(
    pilot,
    "run_pilot",
    lambda *args: _pilot_rows({0.125: 3.04, 0.25: 2.95, 0.375: 2.87, 0.5: 2.82, 1.0: 2.81}),
  )
  assert study.main(["cbs", "--pilot", "--root", str(tmp_path)]) == 0  # 0.13 / 0.3: leverage
  assert "## Pilot" in (tmp_path / "pilot" / "report" / "report.md").read_text()


def test_quick_cbs_study_on_the_users_config_and_text_files(tmp_path, capsys, monkeypatch):
  # One model and no ablation: the plan's breadth is the test above's; this one checks the data.
  monkeypatch.setattr(
    study,
    "QUICK",
    dataclasses.replace(study.QUICK, widths=(1.0,), ablation_width=1.0, ablation_batches=()),
  )
  for f in range(2):
    (tmp_path / f"part{f}.jsonl").write_text(
      "".join(json.dumps({"text": corpus.document(f * 300 + i)}) + "\n" for i in range(300))
    )
  (tmp_path / "held_out.jsonl").write_text(
    "".join(json.dumps({"text": corpus.document(10_000 + i)}) + "\n" for i in range(60))
  )
  root = tmp_path / "cbs"
  args = [
    "cbs",
    "--quick",
    "--root",
    str(root),
    "--config=configs/tiny.py",
    "--config.data.source=text_files",
    f"--config.data.files={tmp_path}/part*.jsonl",
    f"--config.data.eval_files={tmp_path}/held_out.jsonl",
  ]
  assert study.main(args) == 0
  assert "report: " in capsys.readouterr().out
  groups = json.loads((root / "report" / "results.json").read_text())["groups"]
  assert sorted({g["tokens"] for g in groups}) == study.QUICK.budgets
  assert all(math.isfinite(g["cbs"]) for g in groups)
  run = json.loads(
    (root / "d_model=64,batch.size=4,optimizer.lr=0.00354,seed=0" / "config.json").read_text()
  )
  assert (run["config"]["data"]["source"], run["config"]["data"]["vocab"]) == ("text_files", "byte")
  assert json.loads((root / "study.json").read_text())["config"] == "configs/tiny.py"
  # The root now belongs to this model and data; a bad key is named in one line.
  assert study.main(["cbs", "--quick", "--root", str(root)]) == 2
  assert "holds a study of" in capsys.readouterr().err
  assert (
    study.main(
      ["cbs", "--quick", "--root", str(tmp_path / "other"), *args[4:], "--config.data.sourcee=x"]
    )
    == 2
  )
  assert (
    capsys.readouterr()
    .err.strip()
    .splitlines()[-1]
    .endswith("data.sourcee is not a config key; did you mean data.source?")
  )


class _Run:  # what beyond_edge reads of a run
  def __init__(self, lr: float, score: float):
    self.config, self.score = {"optimizer": {"lr": lr}}, score


@pytest.mark.parametrize(
  "scores,expected",
  [
    ({1.0: 5.0, 2.0: 4.0, 4.0: 3.0}, [8.0]),  # best at the largest rate: go up by the grid's ratio
    ({1.0: 3.0, 2.0: 4.0, 4.0: 5.0}, [0.5]),  # best at the smallest: go down
    ({1.0: 5.0, 2.0: 3.0, 4.0: 4.0}, []),  # interior: done
    ({1.0: math.nan, 2.0: math.nan}, []),  # nothing reached the target: nothing to extend
    ({1.0: math.nan, 2.0: 4.0, 4.0: math.nan}, []),
  ],
)  # unreached runs do not count as best
def test_the_learning_rate_grid_grows_past_an_edge_best(scores, expected):
  runs = [_Run(lr, s) for lr, s in scores.items()]
  assert cbs_sweep.beyond_edge(runs, lambda r: r.score) == expected
