"""Why a run cannot continue from its checkpoints: one exception type per answer.

Owns the exception types that `cbs.main` turns into one-line messages and exit codes. It must not
decide which error applies (that is `restoring`, `checkpoints` and `host_positions`).
"""

from etils import epath


class CheckpointError(RuntimeError):
  """The run cannot continue from its checkpoints; the message says why in one line."""


class Incompatible(CheckpointError):
  """A checkpoint's arrays do not fit the configured model (tree, shape or dtype)."""

  def __init__(self, step: int, directory: epath.Path, mismatch: str, stored_keys: set[str]):
    super().__init__(
      f"checkpoint {step} in {directory} does not fit the configured model: {mismatch}"
    )
    self.step, self.mismatch, self.stored_keys = step, mismatch, stored_keys


class Unreadable(CheckpointError):
  """A checkpoint kept failing to read for a reason that does not show it is corrupt."""


class NoneRestorable(CheckpointError):
  """Checkpoints exist (or were set aside) but none of them restores."""


class WriteFailed(CheckpointError):
  """A checkpoint could not be written (disk full, permission lost, object store errors)."""


class HostCountError(ValueError):
  """A checkpoint written by another number of hosts: each host's data position cannot be mapped."""
