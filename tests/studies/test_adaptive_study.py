"""The adaptive study: its plan, its measurement on runs with closed-form loss curves, and the
reduced study end to end (runs, reuse on rerun, report)."""

import json
import math
import pathlib

import pytest

from analysis import runs as runs_lib
from studies import adaptive_measure
from studies import adaptive_plan
from studies import adaptive_report
from studies import cli as study
from tests.analysis import fake_runs

D = fake_runs.SEQ_LEN * 4096  # tokens per run: 1024 steps at batch 4, 64 at batch 64


def measured(
  root: pathlib.Path,
  label: str,
  kind: str,
  lr: float,
  seed: int,
  b_noise: float,
  batch: int = 4,
  batch_at=None,
) -> adaptive_measure.Measured:
  """A fake run of `label` trained for D tokens (batch_at: a growing batch by step)."""
  steps, tokens = 0, 0
  while tokens < D:
    steps += 1
    tokens += (batch_at(steps) if batch_at else batch) * fake_runs.SEQ_LEN
  name = f"{kind}{batch}_{lr}_{seed}_{b_noise}"
  workdir = fake_runs.write_run(
    root,
    name,
    batch,
    b_noise,
    steps,
    D,
    eval_every=1,
    lr=lr,
    schedule="constant" if kind == "constant" else "norm",
    batch_at=batch_at,
  )
  return adaptive_measure.Measured(label, kind, lr, seed, runs_lib.load_run(workdir, name))


def test_each_arm_gets_the_rate_with_the_lowest_seed_mean_loss_at_equal_tokens(tmp_path):
  noise = {1e-3: (16, 16), 2e-3: (6, 10), 4e-3: (4, 40)}  # 4e-3 has the best single seed
  runs = [
    measured(tmp_path, "constant 4", "constant", lr, seed, b)
    for lr, pair in noise.items()
    for seed, b in enumerate(pair)
  ]
  loss_at_d = {
    lr: sum(fake_runs.loss(D / (4 * fake_runs.SEQ_LEN), 4, b) for b in pair) / 2
    for lr, pair in noise.items()
  }
  arm = adaptive_measure.tuned(runs, D)["constant 4"]
  assert arm.lr == min(loss_at_d, key=loss_at_d.get) == 2e-3 and not arm.on_edge
  assert arm.losses == pytest.approx([fake_runs.loss(1024, 4, b) for b in noise[2e-3]], rel=1e-9)
  edge = adaptive_measure.tuned([r for r in runs if r.lr != 1e-3], D)["constant 4"]
  assert edge.lr == 2e-3 and edge.on_edge


def test_steps_to_a_loss_match_the_closed_form_per_seed(tmp_path):
  runs = [
    measured(tmp_path, "constant 4", "constant", 1e-3, seed, b) for seed, b in enumerate((6, 12))
  ]
  arm = adaptive_measure.tuned(runs, D)["constant 4"]
  assert adaptive_measure.steps_to(arm, 2.5) == pytest.approx(
    [fake_runs.steps_to(2.5, 4, 6), fake_runs.steps_to(2.5, 4, 12)], rel=1e-3
  )
  assert math.isnan(adaptive_measure.steps_to(arm, 2.0)[0])  # the floor: never reached


@pytest.mark.parametrize(
  "adaptive, others, expected",
  [
    ([10, 12], [[13, 20], [15, 16]], "fewer"),
    ([10, 14], [[13, 20], [15, 16]], "within seed noise"),  # means say fewer, ranges overlap
    ([10, 12], [[13, 20], []], "fewer"),  # the ramp never reached the loss
    ([30, 40], [[13, 20], [50, 60]], "more"),
    ([], [[13, 20], []], "more"),
  ],
)
def test_adaptive_wins_only_when_its_seed_range_is_apart_from_every_competitor(
  adaptive, others, expected
):
  assert adaptive_measure.verdict(adaptive, others) == expected


def test_report_answers_from_targets_every_arm_reaches(tmp_path):
  grow = lambda step: min(4 * 2 ** (step // 8), 64)  # doubles every 8 steps from 4 up to 64
  runs = [
    measured(tmp_path, label, kind, 1e-3, seed, b_noise + seed, batch, batch_at)
    for label, kind, batch, b_noise, batch_at in (
      ("constant 4", "constant", 4, 8, None),
      ("constant 64", "constant", 64, 8, None),
      ("ramp", "ramp", 4, 40, lambda s: 4 if s < 900 else 8),
      ("norm test", "adaptive", 4, 8, grow),
    )
    for seed in (0, 1)
  ]
  out = tmp_path / "report"
  out.mkdir()
  results = adaptive_report.write(runs, adaptive_report.Design(4, 64, D, 0.5, "cmd"), str(out))
  rows = {r["arm"]: r for r in results["schedules"]}
  finals = [loss for r in rows.values() for loss in r["losses"]]
  targets = [c["target"] for c in results["comparisons"]]
  # From the highest loss every seed reaches by D (the worst seed of the worst arm) down to the
  # lowest that both seeds of some arm reach; every seed of every arm reaches the first.
  assert targets[0] == pytest.approx(max(finals))
  assert targets[-1] == pytest.approx(min(max(r["losses"]) for r in rows.values()))
  assert all(not math.isnan(s) for r in rows.values() for s in r["steps_to"][0])
  # The large batch reaches the easiest loss in the fewest steps; only the small one the hardest.
  first, last = results["comparisons"][0], results["comparisons"][-1]
  assert first["constant"]["arm"] == "constant 64" and last["constant"]["arm"] == "constant 4"
  assert first["constant"]["steps"] == pytest.approx(
    [fake_runs.steps_to(targets[0], 64, b) for b in (8, 9)], rel=2e-2
  )
  assert last["adaptive"]["steps"] == [] and last["verdict"] == "more"
  assert results["answer"]["holds"] is False
  assert (
    "does not hold" in results["answer"]["sentence"] or "only at" in results["answer"]["sentence"]
  )
  assert rows["norm test"]["final_batch"] == [64, 64] and rows["norm test"]["cap_step"] == [32, 32]
  assert (out / "frontier.png").stat().st_size > 10_000
  assert json.loads((out / "results.json").read_text())["answer"] == results["answer"]


def test_full_plan_tunes_every_arm_with_room_to_grow():
  plan = adaptive_plan.FULL
  assert plan.cap // plan.start >= 64 and len(plan.lr_multipliers) >= 3 and len(plan.seeds) >= 2
  assert min(plan.etas) <= 0.1 < plan.eta < max(plan.etas)  # Lau's eta to one that barely grows
  trials = adaptive_plan.grid_trials(plan, 64, {}, "c")
  assert len({t.run.name for t in trials}) == len(trials) == 7 * 3 * 2
  assert {t.arm.kind for t in trials} == {"constant", "ramp", "adaptive"}
  constants = sorted({t.arm.overrides["batch.size"] for t in trials if t.arm.kind == "constant"})
  assert constants[0] == plan.start and constants[-1] == plan.cap and len(constants) >= 4
  stages = adaptive_plan.ramp_stages(plan)
  assert [b for _, b in stages] == [4, 8, 16, 32, 64, 128]
  assert [t for t, _ in stages] == [plan.tokens * k // 7 for k in range(1, 7)]  # equal tokens


def test_a_best_rate_on_the_grids_edge_gets_the_next_rate_past_it():
  rates = (1e-3, 2e-3, 4e-3)
  assert adaptive_plan.beyond_edge(4e-3, rates) == pytest.approx(8e-3)
  assert adaptive_plan.beyond_edge(1e-3, rates) == pytest.approx(5e-4)
  assert adaptive_plan.beyond_edge(2e-3, rates) is None
  assert adaptive_plan.beyond_edge(2e-3, (2e-3,)) is None  # one rate: no direction to go


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  root = tmp_path_factory.mktemp("adaptive")
  assert study.main(["adaptive", "--quick", "--root", str(root)]) == 0
  return root


def test_quick_adaptive_study_tunes_arms_and_reuses_runs_on_rerun(quick, capsys):
  results = json.loads((quick / "report" / "results.json").read_text())
  plan = adaptive_plan.QUICK
  rows = {r["arm"]: r for r in results["schedules"]}
  assert set(rows) == {
    "constant 2",
    "constant 16",
    "ramp 2 -> 16",
    "norm test, eta 0.5",
    "inner-product test, theta 0.1",
    "norm test, eta 0.1",
  }
  assert rows["ramp 2 -> 16"]["final_batch"] == [16] and rows["constant 2"]["final_batch"] == [2]
  assert all(b > plan.start for r in rows.values() if "test" in r["arm"] for b in r["final_batch"])
  assert all(math.isfinite(v) for r in rows.values() for v in r["losses"])
  norm = next(quick.glob("norm_eta=0.1,*"))
  batch = json.loads((norm / "config.json").read_text())["config"]["batch"]
  assert (batch["test_interval"], batch["lr_scaling"], batch["max_size"]) == (1, "none", 16)
  assert results["answer"]["sentence"].startswith("Lau et al.'s claim")
  assert (quick / "report" / "frontier.png").stat().st_size > 10_000
  # A rerun trains nothing and answers the same.
  assert study.main(["adaptive", "--quick", "--root", str(quick)]) == 0
  out = capsys.readouterr().out
  assert out.count("reused") == 6 and "100.0% of the work, 6/6 runs" in out
  again = json.loads((quick / "report" / "results.json").read_text())
  assert again["answer"] == results["answer"]


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--config.model.d_model=-3", "model.d_model"),
    ("--widths=0.5,1", "--widths: for the cbs study only"),
  ],
)
def test_bad_input_to_the_adaptive_study_is_one_line_and_writes_nothing(
  tmp_path, capsys, flag, message
):
  root = tmp_path / "root"
  assert study.main(["adaptive", "--quick", "--root", str(root), flag]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and message in err[0], err
  assert not root.exists()
