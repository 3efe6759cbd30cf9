"""Why a run stops: one reason after each step, in a fixed precedence."""

import pytest

from cbs.run.stopping import StopReason
from cbs.run.stopping import stop_reason
from configs import tiny


@pytest.fixture(scope="module")
def config():
  c = tiny.get_config()
  c.train_tokens, c.train.stop_loss = 1000, 2.5
  return c


def test_each_condition_alone(config):
  assert stop_reason(config, 999, 3, None, False) is None
  assert stop_reason(config, 1000, 3, None, False) is StopReason.TOKENS
  assert stop_reason(config, 10, 3, None, False, {"eval_loss": 2.4}) is StopReason.TARGET_LOSS
  assert stop_reason(config, 10, 3, None, False, {"eval_loss": 2.6}) is None
  assert stop_reason(config, 10, 3, None, True) is StopReason.PREEMPTED
  assert stop_reason(config, 10, 3, 3, False) is StopReason.STEP_LIMIT
  assert stop_reason(config, 10, 2, 3, False) is None


def test_an_end_beats_a_preemption_which_beats_the_step_limit(config):
  assert stop_reason(config, 1000, 3, 3, True) is StopReason.TOKENS
  assert stop_reason(config, 10, 3, 3, True, {"eval_loss_ewa_0.9": 2.0}) is StopReason.TARGET_LOSS
  assert stop_reason(config, 10, 3, 3, True) is StopReason.PREEMPTED
  assert [r.finished for r in StopReason] == [True, True, False, False]


def test_no_target_without_stop_loss(config):
  off = config.copy_and_resolve_references()
  off.train.stop_loss = 0.0
  assert stop_reason(off, 10, 3, None, False, {"eval_loss": -1.0}) is None
