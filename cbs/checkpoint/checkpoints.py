"""The run's checkpoint directory: writing each checkpoint atomically, listing and reading them.

A checkpoint holds the device state (params, optimizer state, weight averages), the host-side
progress record (step, tokens, batch-controller state, seed; written once, by the primary host),
each host's own data-stream position (`host_positions`: written by every host, since each host
reads its own shard of the data) and the resolved config. orbax writes each one into a temporary
directory and renames it when complete, asynchronously, so training goes on while it is written
and an interrupted save never looks like a checkpoint. Paths may be local or `gs://`.

Owns the orbax manager: saving and the failures of background writes (`WriteFailed`, agreed by all
hosts), the steps kept, reading one step, and setting a corrupt step aside. Which step a resume
uses, and what a read failure means, is `restoring`'s; whether a step fits the model is
`compatibility`'s.
"""

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from cbs.checkpoint import host_positions
from cbs.checkpoint import restoring
from cbs.checkpoint.errors import WriteFailed


class Checkpoints:
  """The run's checkpoint directory (`WORKDIR/checkpoints`), keyed by training step."""

  def __init__(self, workdir: epath.PathLike, keep: int, create: bool = True):
    self._manager = ocp.CheckpointManager(
      epath.Path(workdir) / "checkpoints",
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, enable_async_checkpointing=True
      ),
    )
    self._writing = None  # the step being written in the background
    self._failed = False
    self._failure_seen = None  # multi-host: a failure found between log points

  @property
  def directory(self) -> epath.Path:
    return epath.Path(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def progress(self, step: int) -> dict:
    """The host-side record of one checkpoint (tokens, this host's data position, batch state)."""
    restored = self._manager.restore(
      step, args=ocp.args.Composite(progress=ocp.args.JsonRestore(), **self._data_restore(step))
    )
    return host_positions.with_host_data(restored, step)

  def save(self, step: int, state: Any, progress: dict, config: dict) -> None:
    """Starts writing in the background; `wait` blocks until it is complete.

    `progress["data"]` is this host's data position: it goes to this host's own file.
    """
    shared = {key: value for key, value in progress.items() if key != "data"}
    self.wait(step)
    self._writing = step
    try:
      self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          progress=ocp.args.JsonSave(shared),
          data=host_positions.HostStateSave(progress["data"]),
          config=ocp.args.JsonSave(config),
        ),
        force=True,
      )
    except Exception as e:  # the writer's error, raised at once
      raise self._write_failed(step, e) from None

  def check_writes(self, step: int, agree: bool = True) -> None:
    """Raises WriteFailed at training step `step` if a background save has failed.

    Single host: every step. Several hosts look only where `agree` is set (the loop's log
    points), and all stop together when any one's save failed.
    """
    if self._writing is not None and not self._manager.is_saving_in_progress():
      try:
        self._finish_writing(step)
      except WriteFailed as e:
        self._failure_seen = e
    if jax.process_count() == 1 or agree:
      self._raise_agreed(step)

  def _raise_agreed(self, step: int | None) -> None:
    """Raises the failure this host saw, or, with several hosts, one that any host saw."""
    failed, self._failure_seen = self._failure_seen, None
    if jax.process_count() > 1:
      if not int(np.max(multihost_utils.process_allgather(np.int32(failed is not None)))):
        return
      self._failed = True
      raise failed or WriteFailed(
        f"a checkpoint write failed on another host (stopped at step "
        f"{step}); run again to resume from the latest complete one"
      )
    if failed:
      raise failed

  def _finish_writing(self, step: int | None) -> None:
    """Waits for the background save; raises WriteFailed if it did not complete."""
    writing, self._writing = self._writing, None
    if writing is None:
      return
    try:
      self._manager.wait_until_finished()
      self._manager.reload()  # a save whose finalisation was skipped may still be listed
      complete = writing in self._manager.all_steps()
      error = None if complete else "it was not finalised"
    except Exception as e:  # the writer's error, raised by the background thread
      error = e
    if error is not None:
      raise self._write_failed(writing, error, step)

  def _write_failed(self, step: int, error, at_step: int | None = None) -> WriteFailed:
    self._failed = True
    steps = [s for s in self.all_steps() if s != step]
    kept = (
      f"the latest complete checkpoint is step {steps[-1]}"
      if steps
      else "no complete checkpoint was written"
    )
    reason = (
      error
      if isinstance(error, str)
      else (f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}")
    )
    stopped = f"stopped at step {step if at_step is None else at_step}"
    return WriteFailed(
      f"checkpoint {step} could not be written to {self.directory / str(step)} "
      f"({reason}); {stopped}, {kept}: run again to resume from it once the "
      "cause is fixed"
    )

  def _data_restore(self, step: int) -> dict:
    return host_positions.restore_args(self.directory / str(step))

  def set_aside(self) -> list[str]:
    """Names of the checkpoints an earlier restore found corrupt (`corrupt_<step>`)."""
    exists = self.directory.exists()
    return sorted(p.name for p in self.directory.glob("corrupt_*")) if exists else []

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores (`restoring.restore_latest`)."""
    return restoring.restore_latest(self, abstract_state)

  def mark_corrupt(self, step: int) -> str:
    """Renames a corrupt step `corrupt_<step>` (`.1`, `.2` if it went bad before); the new name."""
    aside, suffix = self.directory / f"corrupt_{step}", 1
    while aside.exists():
      aside, suffix = self.directory / f"corrupt_{step}.{suffix}", suffix + 1
    if jax.process_index() == 0:  # one host moves it; the others only stop listing it
      (self.directory / str(step)).rename(aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"cbs: set aside checkpoint {step}")
    self._manager.reload()
    return aside.name

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """State placed with the shardings carried by `abstract_state`, and the progress record."""
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        progress=ocp.args.JsonRestore(),
        **self._data_restore(step),
      ),
    )
    return restored.state, host_positions.with_host_data(restored, step)

  def reached_preemption(self, step: int) -> bool:
    """Whether all hosts agreed to stop at this step (JAX's preemption sync point, multi-host)."""
    return self._manager.reached_preemption(step)

  def saved_config(self, step: int) -> dict:
    """The resolved config a checkpoint was written with."""
    return self._manager.restore(
      step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
    ).config

  def wait(self, at_step: int | None = None) -> None:
    """Blocks until the background save is complete; raises WriteFailed if it failed."""
    try:
      self._finish_writing(at_step)
    except WriteFailed as e:
      self._failure_seen = e
    self._raise_agreed(at_step)

  def close(self) -> None:
    """Waits for writes in flight; after a failed write, only lets go (the failure is reported)."""
    try:
      self._manager.close()
    except Exception:  # the failed write was reported once, by WriteFailed
      if not self._failed:
        raise
      self._manager.close()  # its failed save is now settled: closes its threads and stores
