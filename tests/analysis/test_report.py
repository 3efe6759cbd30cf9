"""Steps-to-target measurement from run directories, the CLI, and the written report."""

import base64
import html.parser
import json
import math
import struct

import numpy as np
import pytest

from analysis import cbs
from analysis import measure
from analysis import plots
from analysis import runs as runs_lib
from tests.analysis import fake_runs

B_NOISE = 80.0


def test_crossing_interpolates_log_loss_between_bracketing_evals():
  evals = [
    {"step": 10, "eval_loss": 4.0},
    {"step": 20, "eval_loss": 2.0},
    {"step": 30, "eval_loss": 1.0},
  ]
  # log-linear between (10, 4) and (20, 2): loss 2 sqrt 2 at step 15.
  assert runs_lib.crossing(evals, "eval_loss", 2 * math.sqrt(2)) == pytest.approx(15)
  assert runs_lib.crossing(evals, "eval_loss", 2.0) == pytest.approx(20)
  assert runs_lib.crossing(evals, "eval_loss", 5.0) == 10  # already below at the first eval
  assert math.isnan(runs_lib.crossing(evals, "eval_loss", 0.5))
  assert runs_lib.loss_at(evals, "eval_loss", 15, axis="step") == pytest.approx(2 * math.sqrt(2))


def test_the_run_that_sets_the_target_at_its_last_eval_reaches_it():
  # exp(log(y)) is one ulp above this y: the reference batch dropped out of the fit.
  evals = [
    {"step": 48, "tokens": 20736, "eval_loss": 3.088438034057617},
    {"step": 96, "tokens": 24576, "eval_loss": 3.071528673171997},
  ]
  target = runs_lib.loss_at(evals, "eval_loss", 24576)
  assert target == 3.071528673171997
  assert runs_lib.crossing(evals, "eval_loss", target) == 96


def make_sweep(root, batches=(8, 16, 32, 64, 128, 256), b_opt=16, budget_steps=400):
  budget = b_opt * budget_steps * fake_runs.SEQ_LEN
  target = fake_runs.loss(budget_steps, b_opt, B_NOISE)
  names = []
  for batch in batches:
    for lr, penalty in (
      (1e-3, 1.0),
      (3e-3, 1.3),
    ):  # the second lr is slower: minimum over the sweep
      name = f"b{batch}-lr{lr}"
      # Long enough to reach the target, except the slow lr at the largest batch.
      length = 0.9 if (batch, lr) == (batches[-1], 3e-3) else 1.5
      steps = int(length * fake_runs.steps_to(target, batch, B_NOISE))
      if batch == b_opt:
        steps = budget_steps
      capped = (batch, lr) == (batches[-1], 3e-3)  # as the study cuts a slower learning rate
      fake_runs.write_run(
        root,
        name,
        batch,
        B_NOISE * penalty,
        steps,
        budget,
        lr=lr,
        eval_every=5,
        stop_loss=target if capped else 0.0,
      )
      names.append(name)
  fake_runs.write_manifest(root, names)
  return budget


def test_measure_recovers_the_law_of_the_runs(tmp_path):
  budget = make_sweep(tmp_path)
  (group,) = measure.measure(runs_lib.load_sweep(tmp_path), b_opt=16, metric="best")
  target = fake_runs.loss(400, 16, B_NOISE)  # reference: batch 16 after the budget (400 steps)
  assert group["tokens"] == budget and group["target"] == pytest.approx(target, rel=1e-4)
  for row in group["best"]:
    assert row["lr"] == 1e-3 and row["metric"] == "eval_loss_ewa_0.9"
    assert row["steps"] == pytest.approx(
      fake_runs.steps_to(target, row["batch_size"], B_NOISE), rel=0.01
    )
  assert group["b_noise"] == pytest.approx(B_NOISE, rel=0.03)
  assert group["cbs"] == pytest.approx(1.2 * 16 + B_NOISE / 5, rel=0.03)
  assert group["cbs_raw"] == 32  # 64 needs > 1.2 x linear scaling on the points
  # Runs that stop short of the target are reported, not dropped.
  assert sorted(group["unreached"]) == ["b16-lr0.003", "b256-lr0.003"]
  assert [r["run"] for r in group["runs"] if r["capped"]] == ["b256-lr0.003"]


def test_measure_asks_for_the_reference_batch(tmp_path):
  make_sweep(tmp_path)
  with pytest.raises(ValueError, match=r"no run at --b_opt=24 \(batch sizes: \[8, 16"):
    measure.measure(runs_lib.load_sweep(tmp_path), b_opt=24)
  (group,) = measure.measure(runs_lib.load_sweep(tmp_path), b_opt=24, target=2.5)
  assert group["target"] == 2.5


def test_fit_command_reads_a_table_and_writes_json(tmp_path, capsys):
  rows = ["group,batch_size,steps,n_params,tokens"]
  for g, (d, a) in enumerate(((1e8, 100.0), (4e8, 200.0))):
    for batch in (32, 64, 128, 256, 512, 1024):
      rows.append(f"g{g},{batch},{a + a * 100 * 2**g / batch},1000000,{d}")
  (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
  out = tmp_path / "fit.json"
  assert (
    cbs.main(["fit", "--csv", str(tmp_path / "t.csv"), "--json", str(out), "--bootstrap", "50"])
    == 0
  )
  result = json.loads(out.read_text())
  assert result["groups"]["g1"]["b_noise"] == pytest.approx(200, rel=1e-3)
  assert result["groups"]["g0"]["cbs"] == pytest.approx(1.2 * 256 + 20, rel=1e-3)
  # CBS 327.2 at D=1e8, 347.2 at D=4e8: exponent log(347.2/327.2)/log 4.
  assert result["scaling"]["tokens"]["exponent"] == pytest.approx(
    math.log(347.2 / 327.2) / math.log(4), rel=1e-3
  )
  assert "n_params" not in result["scaling"]  # one model size: no law in N
  assert "g1" in capsys.readouterr().out


def test_fit_command_names_missing_columns(tmp_path, capsys):
  (tmp_path / "t.csv").write_text("group,batch,steps\na,1,2\n")
  assert cbs.main(["fit", "--csv", str(tmp_path / "t.csv")]) == 2
  assert "lacks column(s) ['batch_size']" in capsys.readouterr().err


class _Images(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.sources = []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.sources.append(dict(attrs)["src"])


def png_size(data: bytes) -> tuple[int, int]:
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  return struct.unpack(">II", data[16:24])


def test_report_writes_tables_pngs_and_a_self_contained_html(tmp_path):
  make_sweep(tmp_path)
  # An adaptive run and a ramp beside the constant ones get the schedule comparison.
  fake_runs.write_run(
    tmp_path,
    "norm",
    8,
    B_NOISE,
    300,
    10_000,
    schedule="norm",
    batch_at=lambda s: 8 * 2 ** min(s // 100, 3),
    eval_every=5,
  )
  names = json.loads((tmp_path / "manifest.json").read_text())["runs"]
  fake_runs.write_manifest(tmp_path, [r["name"] for r in names] + ["norm"])
  out = tmp_path / "report"
  assert (
    cbs.main(
      ["report", "--root", str(tmp_path), "--out", str(out), "--b_opt", "16", "--bootstrap", "20"]
    )
    == 0
  )
  md = (out / "report.md").read_text()
  assert md.startswith("# Critical batch size report")
  assert "python -m analysis.cbs report --root" in md and "Batch-size schedules" in md
  # The guards open the report: the faster learning rate is the smallest swept everywhere.
  assert md.index("## Guards") < md.index("## CBS per model")
  assert (
    "- N=100k,D=410k: batch 8: best lr 0.001 is the smallest swept (0.001, 0.003), so f(8) "
    "is overestimated: add lr 0.000333\n"
  ) in md
  assert "95% interval" in md and "the scaling laws use the fitted CBS" in md
  images = [line[line.rindex("(") + 1 : -1] for line in md.splitlines() if line.startswith("![")]
  assert len(images) == 3  # steps vs batch, loss curves, schedules
  for name in images:
    width, height = png_size((out / name).read_bytes())
    assert width >= 640 and height >= 440
  parser = _Images()
  parser.feed((out / "report.html").read_text())
  assert len(parser.sources) == len(images)
  for src in parser.sources:
    assert src.startswith("data:image/png;base64,")
    assert png_size(base64.b64decode(src.split(",", 1)[1]))[0] >= 640
  results = json.loads((out / "results.json").read_text())
  (group,) = results["groups"]
  assert group["cbs"] == pytest.approx(1.2 * 16 + B_NOISE / 5, rel=0.03)
  assert group["guards"]["batches"][0]["best_lr_at_grid_edge"] and group["guards"]["cbs_in_range"]
  norm = next(r for r in results["schedules"]["rows"] if r["run"] == "norm")
  assert norm["final_batch"] == 64 and norm["initial_batch"] == 8
  refit = cbs.fit_table(cbs.read_table(str(out / "cbs_table.csv")), 16, 0.2, 10)
  assert refit["groups"][group["name"]]["cbs"] == pytest.approx(group["cbs"])
  assert np.isfinite(norm["losses"]).all()


def test_loss_curves_of_a_group_hold_only_its_runs(tmp_path, monkeypatch):
  # Two groups with the same N and D that differ in sequence length: one measurement each.
  budget = 16 * 400 * 64
  names = []
  for seq_len in (64, 128):
    for batch in (8, 16, 32):
      name = f"L{seq_len}-b{batch}"
      fake_runs.write_run(
        tmp_path, name, batch, B_NOISE, 800, budget, seq_len=seq_len, eval_every=20
      )
      names.append(name)
  fake_runs.write_manifest(tmp_path, names)
  drawn = []
  real = plots.loss_curves
  monkeypatch.setattr(
    plots,
    "loss_curves",
    lambda runs, group, *a: drawn.append((runs, group)) or real(runs, group, *a),
  )
  assert cbs.main(["report", "--root", str(tmp_path), "--b_opt", "16", "--bootstrap", "0"]) == 0
  assert len(drawn) == 2
  for runs, group in drawn:
    assert sorted(r.name for r in runs) == [f"L{group['seq_len']}-b{b}" for b in (16, 32, 8)]
  results = json.loads((tmp_path / "report" / "results.json").read_text())
  assert [g["name"] for g in results["groups"]] == ["N=100k,D=410k,L=64", "N=100k,D=410k,L=128"]


def data_under_legends(fig) -> list:
  """Data points (lines' vertices, scatter offsets) drawn inside a legend's box, in pixels."""
  fig.canvas.draw()
  legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
  assert legends
  hits = []
  for legend in legends:
    box = legend.get_window_extent()
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 + 1  # not cut off
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1 + 1
    for ax in fig.axes:
      points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines]
      points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections]
      for xy in points:
        shown = [p for p in xy if ax.bbox.contains(*p)]
        hits += [p for p in shown if box.contains(*p)]
  return hits


def test_figure_legends_sit_outside_the_data(tmp_path, monkeypatch):
  make_sweep(tmp_path)
  fake_runs.write_run(
    tmp_path,
    "norm",
    8,
    B_NOISE,
    300,
    10_000,
    schedule="norm",
    batch_at=lambda s: 8 * 2 ** min(s // 100, 3),
    eval_every=5,
  )
  names = json.loads((tmp_path / "manifest.json").read_text())["runs"]
  fake_runs.write_manifest(tmp_path, [r["name"] for r in names] + ["norm"])
  checked = {}
  real = plots.save
  monkeypatch.setattr(
    plots,
    "save",
    lambda fig, path, *args, **kwargs: (
      checked.setdefault(path.rsplit("/", 1)[-1], data_under_legends(fig)) is None
      or real(fig, path, *args, **kwargs)
    ),
  )
  budgets = [16 * 400 * 64 // k for k in (8, 4, 2, 1)]  # four groups: 16 lines in the old legend
  assert (
    cbs.main(
      [
        "report",
        "--root",
        str(tmp_path),
        "--b_opt",
        "16",
        "--bootstrap",
        "20",
        "--budgets",
        ",".join(map(str, budgets)),
      ]
    )
    == 0
  )
  assert {"steps_vs_batch.png", "cbs_vs_tokens.png", "schedules.png", "loss_curves_0.png"} <= set(
    checked
  )
  assert {name: len(hits) for name, hits in checked.items() if hits} == {}
  md = (tmp_path / "report" / "report.md").read_text()
  assert "- every group: batch 8: best lr 0.001 is the smallest swept" in md  # once, not 4 times
  assert md.count("batch 8: best lr") == 1
