"""Checks a config before any compute starts, so a user mistake costs one line, not a traceback.

Each problem is reported as `key=value: what is allowed`. Checked here: what the config, the device
count and the workdir tell; the modules that own a concept (models, optim, schedules, data) own its
list of allowed names, and data sources report missing files, splits and vocabularies themselves.
"""

import json
import math
import os
import pathlib

import jax
import ml_collections
from etils import epath

from cbs import data
from cbs import ewa
from cbs import models
from cbs import optim
from cbs import schedules
from cbs import sharding
from cbs.batching import layout
from cbs.batching import schedules as batch_schedules


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and what is allowed."""


def require(ok: bool, message: str) -> None:
  """Raises ConfigError(message) unless `ok`."""
  if not ok:
    raise ConfigError(message)



def _check_name(key: str, value: str, allowed: tuple[str, ...]) -> None:
  require(value in allowed, f"{key}={value!r} is not one of: {', '.join(allowed)}")


def validate(config: ml_collections.ConfigDict, num_devices: int, process_count: int = 1) -> None:
  """Raises ConfigError for the first problem found."""
  _check_name("model.name", config.model.name, models.NAMES)
  _check_name("optimizer.name", config.optimizer.name, optim.NAMES)
  _check_name("schedule.name", config.schedule.name, schedules.NAMES)
  _check_name("data.source", config.data.source, data.SOURCES)
  _check_name("model.dtype", config.model.dtype, ("float32", "bfloat16"))
  _check_name("model.remat", config.model.remat, ("none", *models.REMAT_POLICIES))
  _check_name("model.param", config.model.param, models.PARAMETERIZATIONS)
  _check_name("model.attention", config.model.attention, models.ATTENTION)
  if config.model.attention == "cudnn":
    require(jax.default_backend() == "gpu", f"model.attention='cudnn' needs a GPU (this backend "
             f"is {jax.default_backend()}); use auto, einsum or xla")
    require(config.model.dtype == "bfloat16", f"model.attention='cudnn' with model.dtype="
             f"{config.model.dtype!r}: cuDNN flash attention computes in 16 bits; use bfloat16")
  require(config.model.base_width > 0, f"model.base_width={config.model.base_width} must be positive")
  _check_name("train.on_nonfinite", config.train.on_nonfinite, ("stop", "skip"))
  for key in ("train_tokens", "batch.size", "data.seq_len", "optimizer.lr", "eval.batch_size",
              "eval.tokens", "log.every_steps", "checkpoint.keep", "profile.steps"):
    value = config
    for part in key.split("."):
      value = value[part]
    require(value > 0, f"{key}={value!r} must be positive")
  require(config.profile.start_tokens >= -1, f"profile.start_tokens={config.profile.start_tokens!r}"
          " must be >= 0, or -1 (off)")
  require(config.data_budget_tokens >= 0,
           f"data_budget_tokens={config.data_budget_tokens!r} must be >= 0 (0 = train_tokens)")
  for key in ("eval.every_tokens", "eval.per_doubling", "eval.dense_from_tokens",
              "checkpoint.every_tokens", "schedule.warmup_tokens",
              "optimizer.weight_decay", "optimizer.wd_timescale", "optimizer.clip",
              "train.stop_loss"):
    section, name = key.split(".")
    require(config[section][name] >= 0, f"{key}={config[section][name]!r} must be >= 0")
  require(config.eval.per_doubling == 0 or config.eval.every_tokens > 0,
           f"eval.per_doubling={config.eval.per_doubling} needs eval.every_tokens > 0 (the first eval)")
  require(config.eval.dense_from_tokens == 0 or config.eval.dense_per_doubling > 0,
           f"eval.dense_per_doubling={config.eval.dense_per_doubling} must be positive when "
           f"eval.dense_from_tokens={config.eval.dense_from_tokens} is set")
  opt = config.optimizer
  require(not (opt.weight_decay > 0 and opt.wd_timescale > 0),
           f"optimizer.weight_decay={opt.weight_decay} and optimizer.wd_timescale="
           f"{opt.wd_timescale}: set one of them (the timescale derives the decay)")
  require(opt.name in optim.DECAYING or not (opt.weight_decay > 0 or opt.wd_timescale > 0),
           f"optimizer.name={opt.name!r} has no weight decay; use one of "
           f"{', '.join(optim.DECAYING)} with weight_decay / wd_timescale")
  require(config.schedule.warmup_tokens <= config.train_tokens,
           f"schedule.warmup_tokens={config.schedule.warmup_tokens} is longer than the run "
           f"(train_tokens={config.train_tokens})")
  try:
    data_size, _ = sharding.mesh_shape(config.mesh, num_devices)
    rules = dict(sharding.logical_rules(config.mesh))
    ewa.names(config.ewa)
    models.param_counts(config.model, max(config.model.vocab_size, 1))
    batch_schedules.validate(config.batch)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  data_parallel = data_size if rules.get("batch") == "data" else 1
  for key in ("batch.size", "eval.batch_size"):
    section, name = key.split(".")
    size = config[section][name]
    multiple = math.lcm(data_parallel, process_count)
    require(size % multiple == 0,
             f"{key}={size} must be a multiple of the data-parallel size {multiple}")
  requested = config.batch.microbatch
  require(requested == layout.AUTO or type(requested) is int,
           f"batch.microbatch={requested!r} must be a number of sequences per device, -1 (the whole "
           f"initial batch) or {layout.AUTO!r}")
  if requested != layout.AUTO:  # auto picks among the divisors of the initial per-device batch
    _check_microbatch(config.batch, data_parallel)


def _check_microbatch(batch_cfg: ml_collections.ConfigDict, data_parallel: int) -> None:
  microbatch = layout.default_microbatch(batch_cfg.size, data_parallel, batch_cfg.microbatch)
  unit = microbatch * data_parallel
  require(batch_cfg.size % unit == 0,
           f"batch.size={batch_cfg.size} must be a multiple of batch.microbatch x data-parallel "
           f"= {microbatch} x {data_parallel}")
  if batch_schedules.statistics_needed(batch_cfg) != "none":
    require(batch_cfg.size > unit or microbatch % 2 == 0,
             f"batch.microbatch={microbatch}: the {batch_cfg.schedule} test splits a single "
             "microbatch into two groups, so it must be even")


# Knobs that change speed, not what is trained: a run may resume with another value.
_PERFORMANCE_ONLY = ("data.prefetch:", "model.remat:", "model.attention:")


def _differences(old, new, prefix: str) -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    return [d for key in sorted(set(old) | set(new))
            for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}")]
  return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def model_data_changes(previous: dict, config: ml_collections.ConfigDict) -> list[str]:
  """`key: old -> new` for each model/data setting that changes what is trained."""
  current = json.loads(json.dumps(config.to_dict()))
  return [d for section in ("model", "data")
          for d in _differences(previous.get(section), current.get(section), section)
          if not d.startswith(_PERFORMANCE_ONLY)]


def check_workdir(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  """The workdir can be written, and any run already in it trained the same model on the same data."""
  if "://" not in str(workdir):
    existing = pathlib.Path(str(workdir)).absolute()
    while not existing.exists():
      existing = existing.parent
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
             f"workdir {str(workdir)!r} cannot be written ({existing} is not a writable directory)")
  info = workdir / "config.json"
  if not info.exists() or config.train.allow_config_change:
    return
  changed = model_data_changes(json.loads(info.read_text())["config"], config)
  require(not changed, f"workdir {str(workdir)!r} holds a run with another model/data config "
           f"({'; '.join(changed[:3])}); use a new workdir, or set train.allow_config_change=True "
           "to continue it anyway")
