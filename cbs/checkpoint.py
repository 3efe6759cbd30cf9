"""Saving and restoring everything a run needs to continue exactly where it stopped.

A checkpoint holds the device state (params, optimizer state, weight averages), the host-side
progress record (step, tokens, data-stream position, seed) and the resolved config. orbax writes
each one into a temporary directory and renames it when complete, asynchronously, so training goes
on while it is written and an interrupted save never looks like a checkpoint. Paths may be local or
`gs://`.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class Checkpoints:
  """The run's checkpoint directory (`WORKDIR/checkpoints`), keyed by training step."""

  def __init__(self, workdir: epath.PathLike, keep: int):
    self._manager = ocp.CheckpointManager(
        epath.Path(workdir) / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def progress(self, step: int) -> dict:
    """The host-side record of one checkpoint (tokens, data position, batch state), no arrays."""
    return self._manager.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore())).progress

  def save(self, step: int, state: Any, progress: dict, config: dict) -> None:
    """Starts writing in the background; `wait` blocks until it is complete."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        progress=ocp.args.JsonSave(progress),
        config=ocp.args.JsonSave(config)), force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores; an unreadable one is reported in one line and skipped.

    orbax never finalises a partial save, but files can still go missing or be cut short later
    (a full disk, a half-copied run directory). A bad one is renamed `corrupt_<step>`, kept for
    inspection, so the resumed run can write that step again.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self.restore(step, abstract_state)
      except Exception as e:  # any read failure means: not usable, try the previous one
        aside = epath.Path(self._manager.directory) / f"corrupt_{step}"
        logging.warning("checkpoint %d in %s is incomplete or corrupt (%s: %s); moved to %s, "
                        "trying the previous one", step, self._manager.directory,
                        type(e).__name__, str(e).splitlines()[0][:200], aside)
        if jax.process_index() == 0:  # one host moves it; the others only stop listing it
          (epath.Path(self._manager.directory) / str(step)).rename(aside)
        self._manager.reload()
    return None

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """State placed with the shardings carried by `abstract_state`, and the progress record."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        progress=ocp.args.JsonRestore()))
    return restored.state, restored.progress

  def reached_preemption(self, step: int) -> bool:
    """Whether all hosts agreed to stop at this step (JAX's preemption sync point, multi-host)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
