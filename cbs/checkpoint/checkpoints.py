"""Saving and restoring everything a run needs to continue exactly where it stopped.

A checkpoint holds the device state (params, optimizer state, weight averages), the host-side
progress record (step, tokens, batch-controller state, seed; written once, by the primary host),
each host's own data-stream position (`data/process_<i>-of-<n>.json`, written by every host, since
each host reads its own shard of the data) and the resolved config. orbax writes each one into a
temporary directory and renames it when complete, asynchronously, so training goes on while it is
written and an interrupted save never looks like a checkpoint. Paths may be local or `gs://`.

A resume never silently starts over. A checkpoint that does not restore is one of three things, each
with its own answer: *incompatible* with the configured model (the run stops, nothing is touched),
*corrupt* (files of that step missing or cut short: it is set aside and the previous one is used),
or anything else - I/O errors, timeouts, object-store hiccups - which is retried with backoff and,
if it persists, stops the run with nothing renamed.
"""

import dataclasses
import json
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

_HOST_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
RETRY_DELAYS_S = (2.0, 8.0, 30.0)  # waits before the 2nd, 3rd and 4th attempt to read a checkpoint
_sleep = time.sleep  # the clock those waits use (tests count them instead)
# TensorStore prefixes its errors with a status code; these mean the files themselves are bad.
_CORRUPT_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND")
# Verdicts on one attempt, ordered so that the most serious one seen by any host wins.
_OK, _TRANSIENT, _CORRUPT, _INCOMPATIBLE = range(4)


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
    counts = {
      int(m.group(2)) for m in map(_HOST_FILE.fullmatch, (p.name for p in directory.iterdir())) if m
    }
    if not counts:  # the item lost its files: damage, not another setup
      raise FileNotFoundError(f"checkpoint {directory.parent.name} holds no per-host data position")
    if counts != {jax.process_count()}:
      raise HostCountError(
        f"checkpoint {directory.parent.name} was written by {', '.join(map(str, sorted(counts)))} "
        f"host(s) and this run has {jax.process_count()}: each host's data position belongs to "
        "its own shard of the data, so resume it on the same number of hosts"
      )
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
    return _with_host_data(restored, step)

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
          data=HostStateSave(progress["data"]),
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
    """The per-host data item, where the checkpoint has one (older ones kept it in `progress`)."""
    has_item = (epath.Path(self._manager.directory) / str(step) / "data").exists()
    return {"data": HostStateRestore()} if has_item else {}

  def set_aside(self) -> list[str]:
    """Names of the checkpoints an earlier restore found corrupt (`corrupt_<step>`)."""
    exists = self.directory.exists()
    return sorted(p.name for p in self.directory.glob("corrupt_*")) if exists else []

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores, or None only when the run has never saved one.

    orbax never finalises a partial save, but files can still go missing or be cut short later
    (a full disk, a half-copied run directory). Such a step is renamed `corrupt_<step>`, kept for
    inspection, so the resumed run can write that step again. Raises `Incompatible`, `Unreadable`
    or `NoneRestorable` instead of ever returning None while checkpoints exist.
    """
    steps = self.all_steps()
    for i, step in enumerate(reversed(steps)):
      verdict, result = self._restore_with_retries(step, abstract_state)
      if verdict == _OK:
        return result
      previous = steps[-i - 2] if i + 1 < len(steps) else None
      logging.warning(
        "checkpoint %d in %s is corrupt (%s); set aside as %s, %s",
        step,
        self.directory,
        result,
        self._set_aside(step),
        f"restoring step {previous} instead"
        if previous is not None
        else "and no earlier checkpoint is left",
      )
    if steps or self.set_aside():
      raise NoneRestorable(
        f"no checkpoint in {self.directory} restores (set aside: "
        f"{', '.join(self.set_aside())}); set train.restart_if_unrestorable=True to start over"
      )
    return None

  def _restore_with_retries(self, step: int, abstract_state: Any) -> tuple[int, Any]:
    """(_OK, (state, progress)) or (_CORRUPT, reason); raises on the other verdicts.

    Every host takes the same branch: each attempt's verdict is the most serious one of all hosts.
    """
    for attempt in range(len(RETRY_DELAYS_S) + 1):
      verdict, result = _agree(*self._attempt(step, abstract_state))
      if verdict == _INCOMPATIBLE:
        raise result or Incompatible(step, self.directory, "reported by another host", set())
      result = result or "reported by another host"
      if verdict != _TRANSIENT:
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
      f"checkpoint {step} in {self.directory} could not be read in "
      f"{len(RETRY_DELAYS_S) + 1} attempts ({result}); nothing was changed, run "
      "again once the storage is reachable"
    )

  def _attempt(self, step: int, abstract_state: Any) -> tuple[int, Any]:
    """One try at a step; its files and array metadata are checked against the model first.

    With several hosts, what that check found is agreed before orbax's restore, whose
    collectives would otherwise wait for a host that has already given up on the step.
    """
    try:
      self._check_host_data(step)
      stored = _array_metadata(self.directory / str(step) / "state")
      mismatch = describe_mismatch(
        stored, _flat(ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
      )
      checked = (
        (_INCOMPATIBLE, Incompatible(step, self.directory, mismatch, set(stored)))
        if mismatch
        else (_OK, None)
      )
    except Exception as e:  # classified below: nothing is renamed without evidence of corruption
      checked = classify(e), _describe(e)
    if _agree(*checked)[0] != _OK:
      return checked  # the caller's agreement gives every host the most serious verdict
    try:
      return _OK, self.restore(step, abstract_state)
    except HostCountError:  # every host sees the same files: the run's setup, not the checkpoint
      raise
    except Exception as e:  # classified below: nothing is renamed without evidence of corruption
      return classify(e), _describe(e)

  def _check_host_data(self, step: int) -> None:
    """FileNotFoundError if this host's data position is missing from the step.

    Checked before orbax's restore: its collectives would wait for a host that already failed,
    so a file lost for one host only would surface as a barrier timeout instead of a verdict.
    Another host count is left to `HostStateHandler`, which every host refuses alike.
    """
    path = self.directory / str(step)
    if not (path / "data").exists():
      if "data" not in json.loads((path / "progress" / "metadata").read_text()):
        raise FileNotFoundError(f"checkpoint {step} has no data/ item (the hosts' positions)")
      return
    names = [p.name for p in (path / "data").iterdir()]
    counts = {int(m.group(2)) for m in map(_HOST_FILE.fullmatch, names) if m}
    own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if counts <= {jax.process_count()} and own not in names:
      raise FileNotFoundError(f"checkpoint {step} has no {own} (this host's data position)")

  def _set_aside(self, step: int) -> str:
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
    return restored.state, _with_host_data(restored, step)

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


def _describe(error: BaseException) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _with_host_data(restored, step: int) -> dict:
  """The progress record with this host's own data position under "data".

  Checkpoints of older versions kept the position in the progress record; one that has it in
  neither place lost its `data/` item and is corrupt.
  """
  progress = dict(restored.progress)
  if "data" in restored.keys() and restored.data is not None:
    progress["data"] = restored.data
  if "data" not in progress:
    raise FileNotFoundError(f"checkpoint {step} has no data/ item (the hosts' data positions)")
  return progress


def classify(error: BaseException) -> int:
  """_CORRUPT when the error shows files of the step missing or cut short, else _TRANSIENT.

  Only evidence of damage sets a checkpoint aside: anything else (I/O errors, timeouts, object-store
  and permission errors, errors not understood) may pass, so it is retried and never renamed.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (FileNotFoundError, json.JSONDecodeError)):
      return _CORRUPT
    if str(error).startswith(_CORRUPT_CODES):
      return _CORRUPT
    error = error.__cause__ or error.__context__
  return _TRANSIENT


def _agree(verdict: int, result: Any) -> tuple[int, Any]:
  """The most serious verdict of all hosts (single host: its own), so all hosts act alike.

  A host that saw less keeps None as its result: the host that saw it logs the details.
  """
  if jax.process_count() == 1:
    return verdict, result
  worst = int(np.max(multihost_utils.process_allgather(np.int32(verdict))))
  return worst, result if worst == verdict else None


def _flat(tree: Any) -> dict[str, Any]:
  """'/'-joined key path -> leaf of a serialized (dicts and lists) tree."""
  return {
    "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _array_metadata(path: epath.Path) -> dict[str, Any]:
  return _flat(ocp.StandardCheckpointHandler().metadata(path).tree)


def describe_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
  """How a checkpoint's arrays differ from the model's (empty if they fit): keys, shapes, dtypes."""
  only_stored = _diverging(set(stored), set(wanted))
  only_wanted = _diverging(set(wanted), set(stored))
  if only_stored or only_wanted:
    return (
      f"it holds {_some(only_stored) or 'nothing more'} where the model has "
      f"{_some(only_wanted) or 'nothing'}"
    )
  for key in sorted(wanted):
    have = (tuple(stored[key].shape), np.dtype(stored[key].dtype))
    want = (tuple(wanted[key].shape), np.dtype(wanted[key].dtype))
    if have != want:
      return f"{key} is {have[1]}{list(have[0])} in it and {want[1]}{list(want[0])} in the model"
  return ""


def _diverging(keys: set[str], others: set[str]) -> list[str]:
  """Each key in `keys` but not `others`, cut after its first component `others` lacks."""
  prefixes = {"/".join(k.split("/")[:i]) for k in others for i in range(1, k.count("/") + 2)}
  out = set()
  for key in keys - others:
    parts = key.split("/")
    cut = next(i for i in range(1, len(parts) + 1) if "/".join(parts[:i]) not in prefixes)
    out.add("/".join(parts[:cut]))
  params = sorted(k for k in out if k.startswith("params"))  # the same shows in opt and ewa
  return params or sorted(out)


def _some(names: list[str]) -> str:
  return ", ".join(names[:2]) + (f" (+{len(names) - 2} more)" if len(names) > 2 else "")
