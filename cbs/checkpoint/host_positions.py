"""Each host's data position inside a checkpoint: `data/process_<i>-of-<n>.json`, one per host.

Every host reads its own shard of the data, so every host writes its own position into the
checkpoint's `data/` item, and a resume reads back only its own. Owns that item's orbax handler,
the check that this host's file is there before a restore, and the progress record with the
position put back under "data". It must not decide what a missing file means for the run
(`restoring` does).
"""

import dataclasses
import json
import re

import jax
import orbax.checkpoint as ocp
from etils import epath

from cbs.checkpoint.errors import HostCountError

_HOST_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")


def _own_file() -> str:
  return f"process_{jax.process_index()}-of-{jax.process_count()}.json"


def _host_counts(names: list[str]) -> set[int]:
  """The host counts named by the per-host files among `names`."""
  return {int(m.group(2)) for m in map(_HOST_FILE.fullmatch, names) if m}


class HostStateHandler(ocp.CheckpointHandler):
  """One JSON file per process: the data position of the host that wrote it.

  Every process writes its own file into the checkpoint's temporary directory, so the item is
  complete when orbax finalises the checkpoint. Restoring reads this process's file, after checking
  that the checkpoint was written by as many processes as this run has.
  """

  def save(self, directory: epath.Path, args: "HostStateSave") -> None:
    (epath.Path(directory) / _own_file()).write_text(json.dumps(args.state))

  def restore(self, directory: epath.Path, args: "HostStateRestore | None" = None) -> dict:
    directory = epath.Path(directory)
    counts = _host_counts([p.name for p in directory.iterdir()])
    if not counts:  # the item lost its files: damage, not another setup
      raise FileNotFoundError(f"checkpoint {directory.parent.name} holds no per-host data position")
    if counts != {jax.process_count()}:
      raise HostCountError(
        f"checkpoint {directory.parent.name} was written by {', '.join(map(str, sorted(counts)))} "
        f"host(s) and this run has {jax.process_count()}: each host's data position belongs to "
        "its own shard of the data, so resume it on the same number of hosts"
      )
    return json.loads((directory / _own_file()).read_text())

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


def restore_args(step_dir: epath.Path) -> dict:
  """The per-host data item, where the checkpoint has one (older ones kept it in `progress`)."""
  return {"data": HostStateRestore()} if (step_dir / "data").exists() else {}


def check_own_file(step_dir: epath.Path, step: int) -> None:
  """FileNotFoundError if this host's data position is missing from the step.

  Checked before orbax's restore: its collectives would wait for a host that already failed,
  so a file lost for one host only would surface as a barrier timeout instead of a verdict.
  Another host count is left to `HostStateHandler`, which every host refuses alike.
  """
  if not (step_dir / "data").exists():
    if "data" not in json.loads((step_dir / "progress" / "metadata").read_text()):
      raise FileNotFoundError(f"checkpoint {step} has no data/ item (the hosts' positions)")
    return
  names = [p.name for p in (step_dir / "data").iterdir()]
  own = _own_file()
  if _host_counts(names) <= {jax.process_count()} and own not in names:
    raise FileNotFoundError(f"checkpoint {step} has no {own} (this host's data position)")


def with_host_data(restored, step: int) -> dict:
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
