"""Why a run stops: its token budget, its target loss, a preemption, or a step limit.

`stop_reason` is the one place that decides it, from facts the loop gathers after each step; the
loop then checkpoints and returns. A signal (SIGTERM / SIGINT) becomes a preemption through
`StopRequest`; a non-finite loss under `train.on_nonfinite=stop` is an error, not a stop.
"""

import contextlib
import enum
import signal
import threading
from collections.abc import Mapping

import ml_collections
from absl import logging


class NonFiniteError(RuntimeError):
  """The loss or gradient became NaN/Inf under `train.on_nonfinite=stop`."""


class StopReason(enum.Enum):
  TOKENS = "reached train_tokens"
  TARGET_LOSS = "reached train.stop_loss"
  PREEMPTED = "preempted"
  STEP_LIMIT = "ran its steps for this call"

  @property
  def finished(self) -> bool:
    """The run is over (done.json), not merely paused until it is run again."""
    return self in (StopReason.TOKENS, StopReason.TARGET_LOSS)


def stop_reason(
  config: ml_collections.ConfigDict,
  tokens: int,
  steps_run: int,
  stop_after_steps: int | None,
  preempted: bool,
  eval_losses: Mapping[str, float] | None = None,
) -> StopReason | None:
  """Why the run stops after this step, or None to go on; an end beats a preemption, which
  beats the step limit. `eval_losses`: the step's eval, where it had one."""
  best = min(eval_losses.values()) if eval_losses else None
  if best is not None and 0 < config.train.stop_loss and best <= config.train.stop_loss:
    logging.info("eval loss %.4f <= train.stop_loss %.4f: finishing", best, config.train.stop_loss)
    return StopReason.TARGET_LOSS
  if tokens >= config.train_tokens:
    return StopReason.TOKENS
  if preempted:
    return StopReason.PREEMPTED
  if steps_run == stop_after_steps:
    return StopReason.STEP_LIMIT
  return None


class StopRequest(contextlib.AbstractContextManager):
  """SIGTERM / SIGINT ask the loop to finish its step, checkpoint and return (preemption).

  Installed only in the main thread (signals cannot be caught elsewhere), on entering; leaving
  (`restore`) puts the previous handlers back.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    self.restore()

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("received %s: stopping after this step", signal.Signals(signum).name)
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()

  def restore(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
