"""Checks a config before anything is created, so a user mistake costs one line, not a traceback.

Every key is walked: unknown keys (with the closest known one), types and domains
(`config_keys.RULES`), then each named choice's own checks (the registries in `REGISTRIES`), then
what depends on several keys, the device count and the workdir (`CROSS_CHECKS`, `check_workdir`).
Each problem is reported as `key=value: what is allowed`.
"""

import dataclasses
import json
import math
import os
import pathlib

import ml_collections
from etils import epath

from cbs import data
from cbs import models
from cbs import object_store
from cbs.batching import layout
from cbs.batching import schedules as batch_schedules
from cbs.checkpoint import run_dir
from cbs.config import defaults as config_defaults
from cbs.config import keys as config_keys
from cbs.config import registry
from cbs.data import vocab
from cbs.models import choices
from cbs.optim import ewa
from cbs.optim import lr_schedules
from cbs.optim import optimizers as optim
from cbs.parallel import axis_names
from cbs.parallel import sharding

ConfigError = registry.ConfigError
require = registry.require

# Every named choice of the config. `data.vocab` is checked by the sources that read text.
REGISTRIES: tuple[registry.Registry, ...] = (
  choices.MODELS,
  choices.DTYPES,
  choices.ATTENTION,
  choices.REMAT,
  choices.PARAMETERIZATIONS,
  choices.QK_NORMS,
  choices.GELUS,
  choices.OUT_INITS,
  data.SOURCES,
  vocab.VOCABULARIES,
  optim.OPTIMIZERS,
  lr_schedules.SCHEDULES,
  batch_schedules.SCHEDULES,
  layout.ROUNDINGS,
  batch_schedules.LR_SCALINGS,
)
_CHECKED_BY_OTHERS = (vocab.VOCABULARIES,)


@dataclasses.dataclass(frozen=True)
class CrossCheck:
  """A check of several keys together (or of the device count), with configs it refuses."""

  check: registry.Check
  examples: tuple[registry.Overrides, ...]


_DEFAULTS = config_keys.flat(config_defaults.get_config())
# Every key a config may hold, sections included (`--config.batch=...` is a key too).
KNOWN_KEYS = frozenset(_DEFAULTS) | {k.rsplit(".", i)[0] for k in _DEFAULTS for i in (1, 2)}


def unknown_key(key: str) -> str:
  """The refusal of a key that `config_defaults` does not define, naming the closest one."""
  return f"{key} is not a config key{registry.closest(key, _DEFAULTS)}"


def check_keys(config: ml_collections.ConfigDict) -> None:
  """Every key is known, has its default's type and lies in its domain."""
  for key, value in config_keys.flat(config).items():
    require(key in _DEFAULTS, unknown_key(key))
    rule = config_keys.RULES.get(key)
    default = _DEFAULTS[key]
    if (rule is None or rule.typed) and not config_keys.has_type(value, default):
      raise ConfigError(f"{key}={value!r} must be {config_keys.type_name(default)}")
    require(rule is None or rule.ok(value), f"{key}={value!r} {rule and rule.allowed}")


def _positive_warmup(config: ml_collections.ConfigDict) -> None:
  require(
    config.schedule.warmup_tokens <= config.train_tokens,
    f"schedule.warmup_tokens={config.schedule.warmup_tokens} is longer than the run "
    f"(train_tokens={config.train_tokens})",
  )


def _log_spaced_evals(config: ml_collections.ConfigDict) -> None:
  require(
    config.eval.per_doubling == 0 or config.eval.every_tokens > 0,
    f"eval.per_doubling={config.eval.per_doubling} needs eval.every_tokens > 0 (the first eval)",
  )


def _one_decay(config: ml_collections.ConfigDict) -> None:
  opt = config.optimizer
  require(
    not (opt.weight_decay > 0 and opt.wd_timescale > 0),
    f"optimizer.weight_decay={opt.weight_decay} and optimizer.wd_timescale="
    f"{opt.wd_timescale}: set one of them (the timescale derives the decay)",
  )


def _growth_cap(config: ml_collections.ConfigDict) -> None:
  b = config.batch
  with registry.as_config_errors():  # an unreadable probe file: its error names it
    cap = batch_schedules.max_size(b)
  require(cap >= b.size, f"batch.max_size={b.max_size} is below batch.size={b.size}")


def _model_shape(config: ml_collections.ConfigDict) -> None:
  models.param_counts(config.model, max(config.model.vocab_size, 1))


def _data_parallel(config: ml_collections.ConfigDict, num_devices: int) -> int:
  data_size, _ = sharding.mesh_shape(config.mesh, num_devices)
  batch_axis = dict(sharding.logical_rules(config.mesh)).get(axis_names.BATCH)
  return data_size if batch_axis == "data" else 1


def _batch_split(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
  multiple = math.lcm(_data_parallel(config, num_devices), process_count)
  for key in ("batch.size", "eval.batch_size"):
    size = registry.lookup(config, key)
    require(
      size % multiple == 0, f"{key}={size} must be a multiple of the data-parallel size {multiple}"
    )


def _microbatch(config: ml_collections.ConfigDict, num_devices: int) -> None:
  batch_cfg = config.batch
  if batch_cfg.microbatch == layout.AUTO:  # auto picks among the divisors of the per-device batch
    return
  data_parallel = _data_parallel(config, num_devices)
  microbatch = layout.default_microbatch(batch_cfg.size, data_parallel, batch_cfg.microbatch)
  unit = microbatch * data_parallel
  require(
    batch_cfg.size % unit == 0,
    f"batch.size={batch_cfg.size} must be a multiple of batch.microbatch x data-parallel "
    f"= {microbatch} x {data_parallel}",
  )
  if batch_schedules.statistics_needed(batch_cfg) != "none":
    require(
      batch_cfg.size > unit or microbatch % 2 == 0,
      f"batch.microbatch={microbatch}: the {batch_cfg.schedule} test splits a single "
      "microbatch into two groups, so it must be even",
    )


def _model_split(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Each model dimension that the rules split over a mesh axis divides evenly over it."""
  dm = models.dims(config.model, 1)
  sizes = dict(zip(sharding.AXES, sharding.mesh_shape(config.mesh, num_devices)))
  rules = dict(sharding.logical_rules(config.mesh))
  for logical, key, size in (
    (axis_names.EMBED, "model.d_model", dm.d_model),
    (axis_names.HEADS, "model.num_heads", dm.num_heads),
    (axis_names.KV_HEADS, "model.num_kv_heads", dm.num_kv_heads),
    (axis_names.HEAD_DIM, "model.d_head", dm.d_head),
    (axis_names.MLP, "model.mlp_dim", dm.mlp_dim),
  ):
    axis = rules.get(logical)
    require(
      axis is None or size % sizes[axis] == 0,
      f"{key}={size} does not split evenly over mesh.{axis}={sizes.get(axis)} "
      f"({logical} -> {axis}); choose a mesh axis size that divides it",
    )


# Checks of several keys; those that need the device count get it from `validate`.
CROSS_CHECKS: tuple[CrossCheck, ...] = (
  CrossCheck(_positive_warmup, ({"schedule.warmup_tokens": 5_000_000},)),
  CrossCheck(_log_spaced_evals, ({"eval.per_doubling": 4, "eval.every_tokens": 0},)),
  CrossCheck(_one_decay, ({"optimizer.weight_decay": 0.1, "optimizer.wd_timescale": 0.2},)),
  CrossCheck(_growth_cap, ({"batch.max_size": 16},)),
  CrossCheck(
    registry.raising_config_errors(lambda c: ewa.names(c.ewa)),
    ({"ewa.decays": (1.5,)}, {"ewa.horizons_tokens": (0.0,)}),
  ),
  CrossCheck(
    registry.raising_config_errors(_model_shape),
    ({"model.d_model": 60, "model.num_heads": 8}, {"model.name": "llama", "model.num_kv_heads": 3}),
  ),
)
# Configs that `validate` refuses on one device, for the checks that need the device count.
DEVICE_EXAMPLES: tuple[registry.Overrides, ...] = (
  {"mesh.data": 16},
  {"mesh.rules": ((axis_names.BATCH, "dat"),)},
  {"batch.microbatch": 3},
  {"batch.schedule": "norm", "batch.microbatch": 1, "batch.size": 1},
)


def validate(
  config: ml_collections.ConfigDict,
  num_devices: int,
  process_count: int = 1,
  read_data: bool = True,
) -> None:
  """Raises ConfigError for the first problem found; creates and writes nothing.

  `read_data=False` checks the data source's name but not its files and vocabulary: an
  ahead-of-time compile (`cbs.compile_check`) needs no data and may run where none is reachable.
  """
  check_keys(config)
  for choice in REGISTRIES:
    if choice in _CHECKED_BY_OTHERS:
      continue
    if choice is data.SOURCES and not read_data:
      choice.chosen(config)  # a known name
      continue
    choice.check(config)
  for cross in CROSS_CHECKS:
    cross.check(config)
  try:
    sharding.mesh_shape(config.mesh, num_devices)
    sharding.logical_rules(config.mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _batch_split(config, num_devices, process_count)
  _microbatch(config, num_devices)
  _model_split(config, num_devices)


# Knobs that change speed, not what is trained: a run may resume with another value.
_PERFORMANCE_ONLY = ("data.prefetch:", "model.remat:", "model.attention:")


def _differences(old, new, prefix: str) -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    return [
      d
      for key in sorted(set(old) | set(new))
      for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}")
    ]
  return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def model_data_changes(
  previous: dict, config: ml_collections.ConfigDict, sections: tuple[str, ...] = ("model", "data")
) -> list[str]:
  """`key: old -> new` for each model/data setting that changes what is trained."""
  current = json.loads(json.dumps(config.to_dict()))
  return [
    d
    for section in sections
    for d in _differences(previous.get(section), current.get(section), section)
    if not d.startswith(_PERFORMANCE_ONLY)
  ]


def check_workdir(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  """The workdir can be written, and any run already in it trained the same model on the same data."""
  if not object_store.is_object_store(workdir):
    existing = pathlib.Path(str(workdir)).absolute()
    while not existing.exists():
      existing = existing.parent
    require(
      existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
      f"workdir {str(workdir)!r} cannot be written ({existing} is not a writable directory)",
    )
  if not run_dir.has_run(workdir) or config.train.allow_config_change:
    return
  sections = ("model",) if config.train.allow_data_change else ("model", "data")
  changed = model_data_changes(run_dir.read_config(workdir), config, sections)
  require(
    not changed,
    f"workdir {str(workdir)!r} holds a run with another model/data config "
    f"({'; '.join(changed[:3])}); use a new workdir, or set train.allow_config_change=True "
    "to continue it anyway",
  )


def check_init_from(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  """`train.init_from` holds a checkpoint at `train.init_step`, checked before a branch is created.

  Only a run that has not started yet branches: one with a checkpoint of its own resumes from it.
  """
  parent = config.train.init_from
  if not parent or (workdir / "checkpoints").exists():
    return
  directory = epath.Path(parent) / "checkpoints"
  steps = (
    sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    if (directory.is_dir())
    else []
  )
  require(bool(steps), f"train.init_from={parent!r} holds no checkpoint (no steps in {directory})")
  step = config.train.init_step
  require(
    step < 0 or step in steps,
    f"train.init_from={parent!r} has no checkpoint at step {step} "
    f"(train.init_step); it has {', '.join(map(str, steps))}",
  )
