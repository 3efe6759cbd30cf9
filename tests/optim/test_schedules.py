"""Learning-rate schedules against their closed forms at hand-picked token counts."""

import math

import ml_collections
import numpy as np
import pytest

from cbs.optim import lr_schedules

PEAK, TOTAL, WARMUP = 2.0, 1000, 100


def cfg(name, **kw):
  c = ml_collections.ConfigDict(
    dict(
      name=name,
      warmup_tokens=WARMUP,
      warmup_init=0.1,
      final_fraction=0.1,
      decay_fraction=0.2,
      rsqrt_tokens=-1,
    )
  )
  c.update(kw)
  return c


def test_warmup_is_linear_from_the_initial_fraction():
  lr = lr_schedules.make(cfg("constant"), PEAK, TOTAL)
  assert lr(0) == pytest.approx(0.2)
  assert lr(50) == pytest.approx(0.2 + 0.5 * 1.8)
  assert lr(100) == pytest.approx(2.0)


@pytest.mark.parametrize(
  "name,tokens,expected",
  [
    ("constant", 550, 2.0),
    ("constant", 5000, 2.0),
    ("linear_to_zero", 550, 1.0),  # halfway through the 900 decay tokens
    ("linear_to_zero", 1000, 0.0),
    ("linear_to_zero", 2000, 0.0),
    ("cosine", 550, 0.2 + 1.8 * 0.5),  # floor 0.2 + half of the remaining span at the midpoint
    ("cosine", 325, 0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi / 4))),
    ("cosine", 1000, 0.2),
    ("wsd", 799, 2.0),  # stable until the last 200 tokens
    ("wsd", 900, 1.0),
    ("wsd", 1000, 0.0),
    ("rsqrt", 100, 2.0),
    ("rsqrt", 400, 2.0 * math.sqrt(100 / 400)),  # timescale = warmup tokens
    ("rsqrt", 5000, 2.0 * math.sqrt(100 / 1000)),  # held after the end
  ],
)
def test_schedule_closed_forms(name, tokens, expected):
  assert lr_schedules.make(cfg(name), PEAK, TOTAL)(tokens) == pytest.approx(expected, abs=1e-12)


def test_vectorised_matches_scalar_and_handles_tokens_beyond_int32():
  lr = lr_schedules.make(cfg("linear_to_zero", warmup_tokens=0), PEAK, 10**11)
  tokens = np.array([0, 3 * 10**9, 5 * 10**10])
  np.testing.assert_allclose(lr(tokens), [lr(t) for t in tokens])
  assert lr(5 * 10**10) == pytest.approx(1.0)


def test_no_warmup_starts_at_peak():
  assert lr_schedules.make(cfg("cosine", warmup_tokens=0), PEAK, TOTAL)(0) == pytest.approx(PEAK)


def test_unknown_name_is_named_in_the_error():
  with pytest.raises(ValueError, match="schedule.name='cosin' is not one of"):
    lr_schedules.make(cfg("cosin"), PEAK, TOTAL)
