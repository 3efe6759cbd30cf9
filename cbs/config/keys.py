"""The domain of every config key that is not a named choice: what values can work, on their own.

Named choices (`optimizer.name`, `model.dtype`, ...) are checked by their registries; what depends
on several keys by `validation`. `RULES` holds one rule per remaining key of `config_defaults`;
`bad` is a value the rule refuses (None: any value of the key's type works), which the tests and the
bad-input table of docs/configuration.md use.
"""

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Rule:
  """A key's allowed values: `ok(value)`, or the refusal `{key}={value!r} {allowed}`."""

  ok: Callable[[Any], bool]
  allowed: str
  bad: Any = None
  typed: bool = True  # values must have the default's type (False: `ok` checks the type itself)


ANY = Rule(lambda v: True, "")
POSITIVE = Rule(lambda v: v > 0, "must be positive", 0)
NON_NEGATIVE = Rule(lambda v: v >= 0, "must be >= 0", -1)
UNIT_OPEN = Rule(lambda v: 0 <= v < 1, "must be in [0, 1)", 1.0)
UNIT = Rule(lambda v: 0 <= v <= 1, "must be in [0, 1]", 1.5)
NON_EMPTY = Rule(lambda v: bool(v), "must not be empty", "")


def positive_or_default(meaning: str) -> Rule:
  """A positive value, or -1 for the default the key's comment names."""
  return Rule(lambda v: v > 0 or v == -1, f"must be positive, or -1 ({meaning})", 0)


def non_negative_or_off(meaning: str = "off") -> Rule:
  return Rule(lambda v: v >= 0 or v == -1, f"must be >= 0, or -1 ({meaning})", -2)


def _pairs(value) -> bool:
  return all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value)


def _microbatch(value) -> bool:
  return value == "auto" or (type(value) is int and (value > 0 or value == -1))


RULES: dict[str, Rule] = {
  "seed": NON_NEGATIVE,
  "train_tokens": POSITIVE,
  "data_budget_tokens": Rule(lambda v: v >= 0, "must be >= 0 (0 = train_tokens)", -1),
  "compile_cache_dir": ANY,
  "model.num_layers": POSITIVE,
  "model.d_model": POSITIVE,
  "model.num_heads": POSITIVE,
  "model.num_kv_heads": positive_or_default("= num_heads"),
  "model.d_head": positive_or_default("= d_model / num_heads"),
  "model.mlp_dim": positive_or_default("the model's default"),
  "model.vocab_size": positive_or_default("the data's vocabulary"),
  "model.tie_embeddings": ANY,
  "model.norm_eps": POSITIVE,
  "model.rope_theta": POSITIVE,
  "model.base_width": POSITIVE,
  "model.scan_layers": ANY,
  "data.seq_len": POSITIVE,
  "data.files": ANY,
  "data.prepared_dir": ANY,
  "data.eval_files": ANY,
  "data.text_field": NON_EMPTY,
  "data.tfds_name": ANY,
  "data.tfds_data_dir": ANY,
  "data.train_split": NON_EMPTY,
  "data.eval_split": NON_EMPTY,
  "data.seqio_task": ANY,
  "data.seqio_module": ANY,
  "data.prefetch": NON_NEGATIVE,
  "data.shuffle_buffer": POSITIVE,
  "data.synthetic.num_states": POSITIVE,
  "data.synthetic.vocab_size": POSITIVE,
  "data.synthetic.zipf_exponent": NON_NEGATIVE,
  "data.synthetic.seed": NON_NEGATIVE,
  "batch.size": POSITIVE,
  "batch.max_size": positive_or_default("= batch.size"),
  "batch.microbatch": Rule(
    _microbatch,
    "must be a number of sequences per device, -1 (the whole initial batch) or 'auto'",
    "big",
    typed=False,
  ),
  "batch.ramp": Rule(_pairs, "must be stages ((tokens, size), ...)", ((100,),)),
  "batch.probe_file": ANY,
  "batch.ramp_tokens": NON_NEGATIVE,
  "batch.eta": POSITIVE,
  "batch.theta": POSITIVE,
  "batch.nu": POSITIVE,
  "batch.gns_k": POSITIVE,
  "batch.test_interval": POSITIVE,
  "batch.test_groups": Rule(
    lambda v: v >= 2 or v == -1, "must be >= 2 (or -1 = from the layout)", 1
  ),
  "batch.stats_ema": UNIT_OPEN,
  "batch.gns_every": Rule(lambda v: v >= 0, "must be >= 0 (0 = off)", -1),
  "batch.precompile": ANY,
  "mesh.data": positive_or_default("all devices not used by model"),
  "mesh.model": positive_or_default("all devices not used by data"),
  "mesh.fsdp": ANY,
  "mesh.rules": Rule(_pairs, "must be (logical axis, mesh axis) pairs", (("batch",),)),
  "mesh.distributed": ANY,
  "mesh.coordinator": ANY,
  "mesh.num_processes": NON_NEGATIVE,
  "mesh.process_id": non_negative_or_off("auto-detect"),
  "optimizer.lr": POSITIVE,
  "optimizer.b1": UNIT_OPEN,
  "optimizer.b2": UNIT_OPEN,
  "optimizer.eps": POSITIVE,
  "optimizer.weight_decay": NON_NEGATIVE,
  "optimizer.wd_timescale": NON_NEGATIVE,
  "optimizer.clip": NON_NEGATIVE,
  "optimizer.nesterov": ANY,
  "schedule.warmup_tokens": NON_NEGATIVE,
  "schedule.warmup_init": UNIT,
  "schedule.final_fraction": UNIT,
  "schedule.decay_fraction": UNIT,
  "schedule.rsqrt_tokens": positive_or_default("= warmup_tokens"),
  "ewa.decays": ANY,  # `ewa.names` checks each decay and horizon
  "ewa.horizons_tokens": ANY,
  "eval.every_tokens": NON_NEGATIVE,
  "eval.per_doubling": NON_NEGATIVE,
  "eval.dense_from_tokens": NON_NEGATIVE,
  "eval.dense_per_doubling": POSITIVE,
  "eval.tokens": POSITIVE,
  "eval.batch_size": POSITIVE,
  "checkpoint.every_tokens": NON_NEGATIVE,
  "checkpoint.keep": POSITIVE,
  "train.on_nonfinite": Rule(lambda v: v in ("stop", "skip"), "is not one of: stop, skip", "halt"),
  "train.stop_loss": NON_NEGATIVE,
  "train.init_from": ANY,
  "train.init_step": non_negative_or_off("its latest"),
  "train.allow_config_change": ANY,
  "train.allow_data_change": ANY,
  "train.restart_if_unrestorable": ANY,
  "log.every_steps": POSITIVE,
  "profile.start_tokens": non_negative_or_off(),
  "profile.steps": POSITIVE,
}


def flat(config) -> dict[str, Any]:
  """Dotted key -> value of every leaf of a config (a ConfigDict or a plain dict)."""
  items = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      items.update({f"{key}.{k}": v for k, v in flat(value).items()})
    else:
      items[key] = value
  return items


def type_name(default: Any) -> str | None:
  """The type a key's values must have, from its default (None: any; ints pass as floats)."""
  for kind, name in (
    (bool, "True or False"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    ((tuple, list), "a tuple"),
  ):
    if isinstance(default, kind):
      return name
  return None


def has_type(value: Any, default: Any) -> bool:
  """Whether `value` has the type of `default` (bools are not numbers; ints are floats)."""
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))
