"""Local-CBS probes: k* on known losses, branches that start from the exact checkpoint state."""

import json

import numpy as np
import pytest

from analysis import cbs as cbs_report
from cbs import train
from launch import probe
from tests.helpers import records_with
from tests.helpers import tiny_config
from tests.helpers import values


@pytest.mark.parametrize(
  "losses,eps,expected",
  [
    ([3.00, 3.005, 3.009, 3.05], 0.01, 4),  # 8 is 0.05 worse than 1
    ([3.00, 3.005, 3.02, 3.009], 0.01, 8),  # 4 fails, 8 is within eps of 1, 2 and 4
    ([3.10, 3.00, 2.99, 3.20], 0.01, 4),  # being better than a smaller k is fine
    ([3.0, 3.0, 3.0, 3.0], 0.0, 8),
    ([3.0, 3.2, 3.3, 3.4], 0.01, 1),
  ],
)
def test_k_star_is_the_largest_k_within_eps_of_every_smaller_k(losses, eps, expected):
  ks = [1, 2, 4, 8]
  assert probe.k_star(ks, losses, eps) == expected
  assert probe.k_star(ks[::-1], losses[::-1], eps) == expected  # order given does not matter


def parent_config():
  return tiny_config(
    {
      "mesh.data": 1,
      "batch.size": 16,
      "batch.gns_every": 2,
      "train_tokens": 30 * 16 * 64,
      "schedule.warmup_tokens": 2048,
      "eval.every_tokens": 10 * 16 * 64,
      "eval.tokens": 2048,
      "checkpoint.every_tokens": 10 * 16 * 64,
      "checkpoint.keep": 10,
      "log.every_steps": 1,
    }
  )


def test_probe_branches_from_the_checkpoints_and_reports_the_local_cbs(tmp_path):
  run = tmp_path / "run"
  train.train_and_evaluate(parent_config(), str(run))
  result = probe.probe(str(run), [20 * 1024 - 700], [1.0, 2.0], 4 * 1024, 0.01, 0.5, "inprocess")
  points = result["points"]
  assert [(p["step"], p["tokens"], p["batch"]) for p in points] == [(20, 20480, 16)]  # nearest
  parent = {r["step"]: r for r in records_with(run, "loss")}
  for p in points:
    # k = 1 continues the parent exactly: same weights, optimizer state, data and learning rate.
    branch = records_with(run / "probes" / f"tokens={p['tokens']},k=1", "loss")
    assert [r["step"] for r in branch] == [p["step"] + 1 + i for i in range(4)]
    np.testing.assert_allclose(
      [r["loss"] for r in branch], [parent[r["step"]]["loss"] for r in branch], rtol=1e-6
    )
    doubled = records_with(run / "probes" / f"tokens={p['tokens']},k=2", "loss")
    assert [r["batch_size"] for r in doubled] == [32, 32]
    assert doubled[0]["lr"] == pytest.approx(parent[p["step"] + 1]["lr"] * 2**0.5)
    # k* from the branches' own records: 2 if doubling the batch lost at most eps = 0.01.
    held_out = [
      values(run / "probes" / f"tokens={p['tokens']},k={k}", "eval_loss")[-1] for k in (1, 2)
    ]
    assert p["losses"] == held_out
    assert p["k_star"] == (2.0 if held_out[1] <= held_out[0] + 0.01 else 1.0)
    assert p["local_cbs"] == p["k_star"] * 16
    assert np.isfinite(p["losses"]).all() and p["grad_noise_scale"] > 0
  on_disk = json.loads((run / "probes" / "probe.json").read_text())
  assert on_disk["points"][0]["local_cbs"] == points[0]["local_cbs"]
  # The sweep report shows the probe next to the online noise scale.
  (tmp_path / "manifest.json").write_text(
    json.dumps({"sweep": "one run", "runs": [{"name": "run", "workdir": str(run)}]})
  )
  assert (
    cbs_report.main(["report", "--root", str(tmp_path), "--b_opt", "16", "--bootstrap", "0"]) == 0
  )
  md = (tmp_path / "report" / "report.md").read_text()
  assert "## Local critical batch size: run" in md and "(local_cbs_0.png)" in md
  assert (tmp_path / "report" / "local_cbs_0.png").stat().st_size > 5000
  # A point with no checkpoint near it is refused before any branch trains (checkpoints at
  # 10,240, 20,480 and 30,720 tokens).
  with pytest.raises(
    ValueError,
    match=r"^--at_tokens=5000: no checkpoint within --tolerance=0.1 "
    r"x 5,000 tokens \(it keeps 10,240, 20,480, 30,720\); train the run with",
  ):
    probe.probe(str(run), [20480, 5000], [1.0, 2.0], 4 * 1024, 0.01, 0.5, "inprocess")
  assert not (run / "probes" / "tokens=10240,k=1").exists()
  # A second call finds every branch finished and trains nothing.
  again = probe.probe(str(run), [20 * 1024 - 700], [1.0, 2.0], 4 * 1024, 0.01, 0.5, "inprocess")
  assert again["points"] == json.loads(json.dumps(points))


def test_probe_rejects_bad_arguments_before_training(tmp_path):
  with pytest.raises(ValueError, match="holds no run"):
    probe.probe(str(tmp_path / "nothing"), [100], [1.0, 2.0], 1024, 0.01, 0.5, "inprocess")
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text("{}")
  with pytest.raises(ValueError, match="must be positive"):
    probe.probe(str(tmp_path / "run"), [100], [0.0, 2.0], 1024, 0.01, 0.5, "inprocess")
