"""Saving and restoring everything a run needs to continue exactly where it stopped.

A checkpoint holds the device state (params, optimizer state, weight averages), the host-side
progress record (step, tokens, batch-controller state, seed; written once, by the primary host),
each host's own data-stream position (`data/process_<i>-of-<n>.json`, written by every host, since
each host reads its own shard of the data) and the resolved config. orbax writes each one into a
temporary directory and renames it when complete, asynchronously, so training goes on while it is
written and an interrupted save never looks like a checkpoint. Paths may be local or `gs://`.
"""

import dataclasses
import json
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

_HOST_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


class HostCountError(ValueError):
  """A checkpoint written by another number of hosts: each host's data position cannot be mapped."""


class HostStateHandler(ocp.CheckpointHandler):
  """One JSON file per process: the data position of the host that wrote it.

  Every process writes its own file into the checkpoint's temporary directory, so the item is
  complete when orbax finalises the checkpoint. Restoring reads this process's file, after checking
  that the checkpoint was written by as many processes as this run has.
  """

  def save(self, directory: epath.Path, args: "HostStateSave") -> None:
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    (epath.Path(directory) / name).write_text(json.dumps(args.state))

  def restore(self, directory: epath.Path, args: "HostStateRestore | None" = None) -> dict:
    directory = epath.Path(directory)
    counts = {int(m.group(2)) for m in map(_HOST_FILE.fullmatch, (p.name for p in directory.iterdir()))
              if m}
    if counts != {jax.process_count()}:
      raise HostCountError(
          f"checkpoint {directory.parent.name} was written by {', '.join(map(str, sorted(counts)))} "
          f"host(s) and this run has {jax.process_count()}: each host's data position belongs to "
          "its own shard of the data, so resume it on the same number of hosts")
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return json.loads((directory / name).read_text())

  def metadata(self, directory: epath.Path) -> None:
    return None

  def structure(self, directory: epath.Path) -> None:
    return None


@ocp.args.register_with_handler(HostStateHandler, for_save=True)
@dataclasses.dataclass
class HostStateSave(ocp.args.CheckpointArgs):
  state: dict


@ocp.args.register_with_handler(HostStateHandler, for_restore=True)
@dataclasses.dataclass
class HostStateRestore(ocp.args.CheckpointArgs):
  pass


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
    """The host-side record of one checkpoint (tokens, this host's data position, batch state)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore(), **self._data_restore(step)))
    return _with_host_data(restored)

  def save(self, step: int, state: Any, progress: dict, config: dict) -> None:
    """Starts writing in the background; `wait` blocks until it is complete.

    `progress["data"]` is this host's data position: it goes to this host's own file.
    """
    shared = {key: value for key, value in progress.items() if key != "data"}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        progress=ocp.args.JsonSave(shared),
        data=HostStateSave(progress["data"]),
        config=ocp.args.JsonSave(config)), force=True)

  def _data_restore(self, step: int) -> dict:
    """The per-host data item, where the checkpoint has one (older ones kept it in `progress`)."""
    has_item = (epath.Path(self._manager.directory) / str(step) / "data").exists()
    return {"data": HostStateRestore()} if has_item else {}

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores; an unreadable one is reported in one line and skipped.

    orbax never finalises a partial save, but files can still go missing or be cut short later
    (a full disk, a half-copied run directory). A bad one is renamed `corrupt_<step>`, kept for
    inspection, so the resumed run can write that step again.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self.restore(step, abstract_state)
      except HostCountError:
        raise
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
        progress=ocp.args.JsonRestore(), **self._data_restore(step)))
    return restored.state, _with_host_data(restored)

  def reached_preemption(self, step: int) -> bool:
    """Whether all hosts agreed to stop at this step (JAX's preemption sync point, multi-host)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _with_host_data(restored) -> dict:
  """The progress record with this host's own data position under "data"."""
  progress = dict(restored.progress)
  if "data" in restored.keys() and restored.data is not None:
    progress["data"] = restored.data
  return progress
