"""Dotted config overrides (`batch.size=64`): applied to a config, and spelt `--config.KEY=VALUE`.

A run is a config file plus overrides, whether a sweep, a study, a probe branch, the bad-input
table or a user at the command line names it. Applying and spelling them in one place means a
sweep's run and the same command typed by hand build the same config.
"""

import importlib.util
import json
import pathlib
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import ml_collections

from cbs.config import defaults as config_defaults
from cbs.config import registry

FLAG_PREFIX = "--config."


def flag_value(value: Any) -> str:
  """A value as the command line reads it back: lists and tuples as JSON, the rest as `str`."""
  return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def to_flags(overrides: Mapping[str, Any]) -> list[str]:
  """`--config.KEY=VALUE` arguments, in the overrides' order."""
  return [f"{FLAG_PREFIX}{key}={flag_value(value)}" for key, value in overrides.items()]


def flag_keys(argv: Iterable[str]) -> list[str]:
  """The keys of the `--config.KEY=VALUE` arguments among `argv`."""
  return [arg.split("=", 1)[0][len(FLAG_PREFIX) :] for arg in argv if arg.startswith(FLAG_PREFIX)]


def parse_flags(args: Iterable[str]) -> dict[str, Any]:
  """`--config.KEY=VALUE` arguments as overrides; values read as JSON where they parse (numbers,
  booleans, lists), else kept as strings; ValueError names any other argument."""
  overrides = {}
  for arg in args:
    key, eq, value = arg.removeprefix(FLAG_PREFIX).partition("=")
    if not arg.startswith(FLAG_PREFIX) or not eq or not key:
      raise ValueError(f"unrecognized argument {arg!r}: expected {FLAG_PREFIX}KEY=VALUE")
    try:
      overrides[key] = json.loads(value)
    except json.JSONDecodeError:
      overrides[key] = value
  return overrides


def changed(config: Mapping[str, Any]) -> dict[str, Any]:
  """The keys (dotted, flat) of a config, as a plain dict, whose values differ from the defaults
  (`config_defaults`).

  What a config file, a sweep or the command line chose: probes carry them into branches, and
  runs show them in TensorBoard's HParams dashboard.
  """
  plain = json.loads(json.dumps(config))  # tuples and lists compare alike, as in config.json
  defaults = _flat(json.loads(json.dumps(config_defaults.get_config().to_dict())))
  missing = object()
  return {k: v for k, v in _flat(plain).items() if defaults.get(k, missing) != v}


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def apply(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """`config` with each value set as given (ints in float fields become floats); in place."""
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (registry.lookup(config, section) if section else config)[name] = value
  return config


def apply_as_command_line(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """`config` with the overrides converted to the type of the field they replace, as the command
  line does: a sweep's `1e-3` fills a float field and `64` an int field. In place; ValueError
  names an unknown key."""
  for key, value in overrides.items():
    *parents, name = key.split(".")
    node = config
    for part in parents:
      node = node[part] if node is not None and part in node else None
    if node is None or name not in node:
      from cbs.config import validation  # noqa: PLC0415  (loads JAX: only to name the closest key)

      raise ValueError(f"override {key}={value!r}: {validation.unknown_key(key)}")
    node[name] = _converted(node[name], value)
  return config


def _converted(old: Any, value: Any) -> Any:
  if isinstance(old, bool):
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
  if isinstance(old, (int, float)) and not isinstance(value, bool):
    return type(old)(value) if isinstance(old, float) or float(value).is_integer() else value
  if isinstance(old, tuple):
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)
  return value


def load(config: str, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict `cbs.main --config=FILE[:ARG] --config.KEY=VALUE ...` would build, without a
  subprocess (`apply_as_command_line`); ValueError if FILE is not a Python file."""
  path, _, arg = config.partition(":")
  spec = importlib.util.spec_from_file_location("cbs_run_config", path)
  if spec is None or not pathlib.Path(path).is_file():
    raise ValueError(f"config {path!r} is not a Python file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg) if arg else module.get_config()
  return apply_as_command_line(c, overrides)
