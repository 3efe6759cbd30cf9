"""The paper configs carry the CBS paper's protocol and Chinchilla budgets."""

import pytest

from cbs import eval_schedule
from cbs import models
from cbs.config import validation
from configs import cbs_paper
from launch import grid


@pytest.mark.parametrize(
  "spec,multiple", [("tiny", 1.0), ("85m", 1.0), ("302m,x0.5", 0.5), ("1.2b,x4", 4.0)]
)
def test_budgets_and_protocol(spec, multiple):
  c = cbs_paper.get_config(spec)
  chinchilla = 20 * models.param_counts(c.model, 32_000)["non_embedding"]
  assert c.train_tokens == int(multiple * chinchilla)
  assert c.schedule.warmup_tokens == min(chinchilla // 4, c.train_tokens)
  assert (
    c.optimizer.name,
    c.optimizer.b1,
    c.optimizer.eps,
    c.optimizer.weight_decay,
    c.optimizer.clip,
  ) == ("adamw", 0.95, 1e-8, 0.0, 1.0)
  assert (c.schedule.name, c.schedule.warmup_init) == ("constant", 0.1)
  assert len(c.ewa.decays) >= 2
  if spec != "tiny":
    assert (c.data.seq_len, c.data.source, c.batch.size) == (512, "tfds", 256)
    assert c.model.d_model == models.PAPER_SIZES[spec.split(",")[0]]["d_model"]


def test_tiny_paper_config_is_valid_on_cpu():
  validation.validate(cbs_paper.get_config("tiny,x2"), num_devices=1)


def test_bad_spec_is_named():
  with pytest.raises(ValueError, match="configs/cbs_paper.py:2b: use SIZE or SIZE,xK"):
    cbs_paper.get_config("2b")


def eval_tokens(config, batch: int, until: float, start: int = 0) -> list[int]:
  """Token counts at which a run of `config` at `batch` evaluates, from `start` to `until` tokens."""
  step, points = batch * config.data.seq_len, []
  tokens = start - start % step
  while tokens < until:
    if eval_schedule.due(config.eval, tokens, tokens + step):
      points.append(tokens + step)
    tokens += step
  return points


def test_151m_sweep_is_the_two_phase_paper_protocol():
  sweep = grid.load("configs/sweeps/cbs_151m.py")
  assert sweep["axes"]["batch.size"] == [2**k for k in range(6, 15)]  # 64 ... 16384
  assert sweep["axes"]["optimizer.b2"] == [0.95, 0.99, 0.995, 0.999]
  assert sweep["two_phase"] == {"b_opt": 256, "cap": 8}
  c = cbs_paper.get_config("151m")
  assert 0.995 in c.ewa.decays
  # Wherever a batch can cross the target (from D/2 on; to 2 D below batch 1024, 8 D above), evals
  # are at most 4.5% apart, so the crossing is interpolated between close points; at batch 16384
  # that is about every 100 steps.
  budget = c.train_tokens
  for batch in sweep["axes"]["batch.size"]:
    points = eval_tokens(c, batch, (2 if batch < 1024 else 8) * budget, budget // 2)
    gaps = [b / a - 1 for a, b in zip(points, points[1:])]
    assert max(gaps) < 0.045 + batch * 512 / points[0], batch
  steps = [t // (16384 * 512) for t in eval_tokens(c, 16384, 6.4 * budget)]
  assert 60 < steps[-1] - steps[-2] < 110 and len(steps) < 100


def test_eval_schedule_without_log_spacing_is_the_fixed_cadence():
  c = cbs_paper.get_config("tiny")
  c.eval.update(every_tokens=1000, per_doubling=0, dense_from_tokens=0)
  assert eval_tokens(c, 8, 5000) == [1024, 2048, 3072, 4096, 5120]
  c.eval.update(per_doubling=2)  # 1000 x 2^(k/2): 1000, 1414, 2000, 2828, 4000, 5657
  assert eval_tokens(c, 2, 6000) == [1024, 1536, 2048, 2944, 4096, 5760]  # steps of 128
