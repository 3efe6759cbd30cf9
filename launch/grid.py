"""Sweep files and their expansion into runs with deterministic, readable workdir names.

A sweep file is Python with `get_sweep() -> dict`: `config` (the config file, with its `:arg`),
`fixed` (overrides shared by every run) and `axes` (key -> list of values; the grid is their product).
A run's name joins its axis values (`batch.size=64,optimizer.lr=0.001`), so the same sweep always
maps to the same workdirs and a rerun finds its finished and unfinished runs.
"""

import dataclasses
import importlib.util
import itertools
import pathlib

from cbs.config import overrides as config_overrides


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  config: str
  overrides: dict

  def args(self, workdir: str) -> list[str]:
    """The `cbs.main` command line of this run."""
    return [
      "-m",
      "cbs.main",
      f"--config={self.config}",
      f"--workdir={workdir}",
      *config_overrides.to_flags(self.overrides),
    ]


def load(path: str) -> dict:
  """The dict returned by the sweep file's `get_sweep()`; raises ValueError if it is malformed."""
  spec = importlib.util.spec_from_file_location("cbs_sweep", path)
  if spec is None or not pathlib.Path(path).is_file():
    raise ValueError(f"--sweep={path!r} is not a Python file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sweep = module.get_sweep()
  for key in ("config", "axes"):
    if key not in sweep:
      raise ValueError(f"sweep {path!r} has no {key!r} (expected config, fixed, axes)")
  for axis, values in sweep["axes"].items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"sweep {path!r}: axis {axis!r} needs a non-empty list of values")
  return sweep


def expand(sweep: dict) -> list[Run]:
  """Every point of the grid, in a fixed order (axes in the order written, values as listed)."""
  axes = list(sweep["axes"].items())
  return [
    at(sweep, dict(zip((k for k, _ in axes), values)))
    for values in itertools.product(*(v for _, v in axes))
  ]


def at(sweep: dict, point: dict) -> Run:
  """The run of the sweep at `point` (a value for each axis, in the axes' order): also a point
  off the grid, which two-phase sweeps add when a learning rate grid needs extending."""
  name = ",".join(f"{k}={config_overrides.flag_value(v)}" for k, v in point.items()) or "run"
  return Run(name.replace("/", "_"), sweep["config"], {**sweep.get("fixed", {}), **point})


# The config a run builds: `config_overrides.load`, named here for the sweeps that call it.
load_config = config_overrides.load
