"""The run directory's schema: the names of the files a run and a sweep root hold, and what the
run info (`config.json`) holds.

Training writes these files; resume, branches, sweeps and the analysis read them to tell what a
run is and how far it got. Naming them once keeps every writer and reader on one schema. Plain
JSON and paths only, so the analysis and the launchers read runs without loading JAX.
"""

import dataclasses
import json

from etils import epath

RUN_INFO = "config.json"  # written when a run starts: a `RunInfo`
DONE = "done.json"  # {"step", "tokens"}, written once the run reached its train_tokens
FAILED = "failed.json"  # {"reason", "exit_code"} of a run that failed (`launch.outcome`)
METRICS = "metrics.jsonl"  # the metrics records (`records`)
LOCK = "lock.json"  # the live run's lock (`workdir_lock`)
PROBES = "probes"  # `launch.probe`'s branches, and its result PROBE_RESULT in there
PROBE_RESULT = "probe.json"
MANIFEST = "manifest.json"  # a sweep root's runs: {"sweep", ..., "runs": [{"name", ...}, ...]}


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What `config.json` holds, in the order written."""

  config: dict  # the run's whole config, as a plain dict (`ConfigDict.to_dict`)
  params: dict  # parameter counts (`models.param_counts`)
  floors: dict  # known loss floors of the data (empty for real text)


def has_run(workdir: epath.PathLike) -> bool:
  """Whether a run has started in `workdir` (its run info is written first)."""
  return (epath.Path(workdir) / RUN_INFO).exists()


def _read(workdir: epath.PathLike) -> dict:
  return json.loads((epath.Path(workdir) / RUN_INFO).read_text())


def read_run_info(workdir: epath.PathLike) -> RunInfo:
  info = _read(workdir)
  return RunInfo(info["config"], info["params"], info.get("floors") or {})


def read_config(workdir: epath.PathLike) -> dict:
  """The config a run was started with, as a plain dict (all a resume or a branch needs)."""
  return _read(workdir)["config"]


def write_run_info(workdir: epath.PathLike, info: RunInfo) -> None:
  (epath.Path(workdir) / RUN_INFO).write_text(json.dumps(dataclasses.asdict(info), indent=2))


def read_manifest(root: epath.PathLike) -> dict | None:
  """A sweep root's manifest, or None where the root has none (yet)."""
  path = epath.Path(root) / MANIFEST
  return json.loads(path.read_text()) if path.exists() else None
