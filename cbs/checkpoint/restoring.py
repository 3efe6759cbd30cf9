"""Which checkpoint a resume uses: the newest that restores, with a verdict on each that does not.

A resume never silently starts over. A checkpoint that does not restore is one of three things, each
with its own answer: *incompatible* with the configured model (the run stops, nothing is touched),
*corrupt* (files of that step missing or cut short: it is set aside and the previous one is used),
or anything else - I/O errors, timeouts, object-store hiccups - which is retried with backoff and,
if it persists, stops the run with nothing renamed. With several hosts, every attempt's verdict is
the most serious one any host saw, so all hosts take the same branch. Owns that policy; reading
and renaming a step is `checkpoints.Checkpoints`'s.
"""

import enum
import json
import time
from typing import TYPE_CHECKING
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cbs.checkpoint import compatibility
from cbs.checkpoint import host_positions
from cbs.checkpoint.errors import HostCountError
from cbs.checkpoint.errors import Incompatible
from cbs.checkpoint.errors import NoneRestorable
from cbs.checkpoint.errors import Unreadable

if TYPE_CHECKING:
  from cbs.checkpoint.checkpoints import Checkpoints

RETRY_DELAYS_S = (2.0, 8.0, 30.0)  # waits before the 2nd, 3rd and 4th attempt to read a checkpoint
_sleep = time.sleep  # the clock those waits use (tests count them instead)
# TensorStore prefixes its errors with a status code; these mean the files themselves are bad.
_CORRUPT_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND")


class Verdict(enum.IntEnum):
  """On one attempt to read a step, ordered so that the most serious one seen by any host wins."""

  OK = 0
  TRANSIENT = 1
  CORRUPT = 2
  INCOMPATIBLE = 3


def restore_latest(checkpoints: "Checkpoints", abstract_state: Any) -> tuple[Any, dict] | None:
  """The newest checkpoint that restores, or None only when the run has never saved one.

  orbax never finalises a partial save, but files can still go missing or be cut short later
  (a full disk, a half-copied run directory). Such a step is renamed `corrupt_<step>`, kept for
  inspection, so the resumed run can write that step again. Raises `Incompatible`, `Unreadable`
  or `NoneRestorable` instead of ever returning None while checkpoints exist.
  """
  steps = checkpoints.all_steps()
  for i, step in enumerate(reversed(steps)):
    verdict, result = _restore_with_retries(checkpoints, step, abstract_state)
    if verdict == Verdict.OK:
      return result
    previous = steps[-i - 2] if i + 1 < len(steps) else None
    logging.warning(
      "checkpoint %d in %s is corrupt (%s); set aside as %s, %s",
      step,
      checkpoints.directory,
      result,
      checkpoints.mark_corrupt(step),
      f"restoring step {previous} instead"
      if previous is not None
      else "and no earlier checkpoint is left",
    )
  if steps or checkpoints.set_aside():
    raise NoneRestorable(
      f"no checkpoint in {checkpoints.directory} restores (set aside: "
      f"{', '.join(checkpoints.set_aside())}); set train.restart_if_unrestorable=True to start over"
    )
  return None


def _restore_with_retries(
  checkpoints: "Checkpoints", step: int, abstract_state: Any
) -> tuple[Verdict, Any]:
  """(OK, (state, progress)) or (CORRUPT, reason); raises on the other verdicts."""
  directory = checkpoints.directory
  for attempt in range(len(RETRY_DELAYS_S) + 1):
    verdict, result = _agree(*_attempt(checkpoints, step, abstract_state))
    if verdict == Verdict.INCOMPATIBLE:
      raise result or Incompatible(step, directory, "reported by another host", set())
    result = result or "reported by another host"
    if verdict != Verdict.TRANSIENT:
      return verdict, result
    if attempt < len(RETRY_DELAYS_S):
      logging.warning(
        "reading checkpoint %d failed (%s); retrying in %.0f s",
        step,
        result,
        RETRY_DELAYS_S[attempt],
      )
      _sleep(RETRY_DELAYS_S[attempt])
  raise Unreadable(
    f"checkpoint {step} in {directory} could not be read in "
    f"{len(RETRY_DELAYS_S) + 1} attempts ({result}); nothing was changed, run "
    "again once the storage is reachable"
  )


def _attempt(checkpoints: "Checkpoints", step: int, abstract_state: Any) -> tuple[Verdict, Any]:
  """One try at a step; its files and array metadata are checked against the model first.

  With several hosts, what that check found is agreed before orbax's restore, whose
  collectives would otherwise wait for a host that has already given up on the step.
  """
  step_dir = checkpoints.directory / str(step)
  try:
    host_positions.check_own_file(step_dir, step)
    mismatch, stored_keys = compatibility.mismatch_with(step_dir / "state", abstract_state)
    checked = (
      (Verdict.INCOMPATIBLE, Incompatible(step, checkpoints.directory, mismatch, stored_keys))
      if mismatch
      else (Verdict.OK, None)
    )
  except Exception as e:  # classified below: nothing is renamed without evidence of corruption
    checked = classify(e), _describe(e)
  if _agree(*checked)[0] != Verdict.OK:
    return checked  # the caller's agreement gives every host the most serious verdict
  try:
    return Verdict.OK, checkpoints.restore(step, abstract_state)
  except HostCountError:  # every host sees the same files: the run's setup, not the checkpoint
    raise
  except Exception as e:  # classified below: nothing is renamed without evidence of corruption
    return classify(e), _describe(e)


def _describe(error: BaseException) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def classify(error: BaseException) -> Verdict:
  """CORRUPT when the error shows files of the step missing or cut short, else TRANSIENT.

  Only evidence of damage sets a checkpoint aside: anything else (I/O errors, timeouts, object-store
  and permission errors, errors not understood) may pass, so it is retried and never renamed.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (FileNotFoundError, json.JSONDecodeError)):
      return Verdict.CORRUPT
    if str(error).startswith(_CORRUPT_CODES):
      return Verdict.CORRUPT
    error = error.__cause__ or error.__context__
  return Verdict.TRANSIENT


def _agree(verdict: Verdict, result: Any) -> tuple[Verdict, Any]:
  """The most serious verdict of all hosts (single host: its own), so all hosts act alike.

  A host that saw less keeps None as its result: the host that saw it logs the details.
  """
  if jax.process_count() == 1:
    return verdict, result
  worst = Verdict(int(np.max(multihost_utils.process_allgather(np.int32(verdict)))))
  return worst, result if worst == verdict else None
