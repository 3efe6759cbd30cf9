"""Optimizers: optax transforms with a unit learning rate, scaled by the host's lr(tokens) each step.

In every optimizer here the learning rate is optax's last scaling, and decoupled weight decay comes
after it (`apply_updates`), so `lr * (update(lr=1) - wd * param)` is the optimizer at learning
rate `lr`, with no schedule inside the optimizer state (the schedule is a function of tokens and
lives in `lr_schedules.py`). The decay coefficient is a step argument too, so it can follow the
batch size (`weight_decay_at`). Which parameters are matrices (decayed, muP-scaled) follows from
their logical axes (`is_matrix`), not from where they sit in the model. This module builds
transforms and applies updates; it does not choose learning rates.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from cbs.config import registry
from cbs.parallel import axis_names


def _no_decay(name: str, also: registry.Check = registry.no_check):
  def check(config: ml_collections.ConfigDict) -> None:
    opt = config.optimizer
    registry.require(
      not (opt.weight_decay > 0 or opt.wd_timescale > 0),
      f"optimizer.name={name!r} has no weight decay; use one of "
      f"{', '.join(n for n, e in OPTIMIZERS.items() if e.decays)} with "
      "weight_decay / wd_timescale",
    )
    also(config)

  return check


def _no_nesterov(name: str, also: registry.Check = registry.no_check):
  def check(config: ml_collections.ConfigDict) -> None:
    registry.require(
      not config.optimizer.nesterov,
      f"optimizer.nesterov=True: Nesterov momentum is for sgd, not {name}",
    )
    also(config)

  return check


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optimizer at unit learning rate, and whether it takes decoupled weight decay."""

  build: Callable[[ml_collections.ConfigDict], optax.GradientTransformation]
  decays: bool
  check: registry.Check
  examples: tuple[registry.Overrides, ...] = ()


def _signum(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.chain(optax.ema(cfg.b1, debias=False), optax.scale_by_sign(), optax.scale(-1.0))


OPTIMIZERS = registry.Registry(
  "optimizer.name",
  {
    "adamw": Optimizer(
      lambda c: optax.adam(1.0, b1=c.b1, b2=c.b2, eps=c.eps),
      True,
      _no_nesterov("adamw"),
      ({"optimizer.nesterov": True},),
    ),
    "adam": Optimizer(
      lambda c: optax.adam(1.0, b1=c.b1, b2=c.b2, eps=c.eps),
      False,
      _no_decay("adam", _no_nesterov("adam")),
      (
        {"optimizer.name": "adam", "optimizer.weight_decay": 0.1},
        {"optimizer.name": "adam", "optimizer.nesterov": True},
      ),
    ),
    "sgd": Optimizer(
      lambda c: optax.sgd(1.0, momentum=c.b1 or None, nesterov=c.nesterov),
      False,
      _no_decay("sgd"),
      ({"optimizer.name": "sgd", "optimizer.wd_timescale": 0.2},),
    ),
    "lion": Optimizer(
      lambda c: optax.lion(1.0, b1=c.b1, b2=c.b2, weight_decay=0.0),
      True,
      _no_nesterov("lion"),
      ({"optimizer.name": "lion", "optimizer.nesterov": True},),
    ),
    "adafactor": Optimizer(
      lambda c: optax.adafactor(1.0),
      True,
      _no_nesterov("adafactor"),
      ({"optimizer.name": "adafactor", "optimizer.nesterov": True},),
    ),
    "signum": Optimizer(
      _signum,
      True,
      _no_nesterov("signum"),
      ({"optimizer.name": "signum", "optimizer.nesterov": True},),
    ),
  },
  unknown_example="adamx",
)


def logical_axes(leaf) -> tuple[str, ...] | None:
  """A parameter's logical axes (None for a bare array, which has none recorded)."""
  if not isinstance(leaf, nnx.Variable):
    return None
  axes = leaf.get_metadata().get("out_sharding")
  return tuple(axes) if axes else None


def is_matrix(leaf) -> bool:
  """Whether a parameter is a matrix (decayed, muP-scaled) rather than a vector (norm scales).

  A bare array (no logical axes) counts its dimensions; a stack of scanned blocks does not make a
  vector a matrix.
  """
  axes = logical_axes(leaf)
  if axes is None:
    return jnp.ndim(leaf) >= 2
  return sum(axis != axis_names.LAYERS for axis in axes) >= 2


def is_hidden(leaf) -> bool:
  """A matrix other than the input/output embeddings (muP's "matrix-like" parameters): those are
  the matrices with a vocabulary axis."""
  return is_matrix(leaf) and axis_names.VOCAB not in (logical_axes(leaf) or ())


def _map_variables(fn, *trees):
  """`fn` on each parameter, as an `nnx.Variable` where the tree holds them (with logical axes)."""
  return jax.tree.map(fn, *trees, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _value(leaf):
  return leaf[...] if isinstance(leaf, nnx.Variable) else leaf


def _replace(leaf, value):
  return leaf.replace(value) if isinstance(leaf, nnx.Variable) else value


def scale_hidden(factor: float) -> optax.GradientTransformation:
  """Multiplies the updates of hidden matrices by `factor` (muP's per-layer Adam learning rate)."""

  def update(updates, state, params=None):
    del params
    return _map_variables(
      lambda u: _replace(u, _value(u) * factor) if is_hidden(u) else u, updates
    ), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(
  opt_cfg: ml_collections.ConfigDict, hidden_lr_scale: float = 1.0
) -> optax.GradientTransformation:
  """The configured optimizer at unit learning rate, after global-norm clipping if `clip > 0`.

  `hidden_lr_scale` multiplies the updates of hidden matrices (muP; 1 = standard).
  """
  parts = [optax.clip_by_global_norm(opt_cfg.clip)] if opt_cfg.clip > 0 else []
  parts.append(OPTIMIZERS[opt_cfg.name].build(opt_cfg))
  if hidden_lr_scale != 1.0:
    parts.append(scale_hidden(hidden_lr_scale))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def apply_updates(
  tx: optax.GradientTransformation,
  grads,
  opt_state,
  params,
  lr: jax.Array,
  weight_decay: jax.Array | float = 0.0,
):
  """One update at learning rate `lr` with decoupled decay `weight_decay` (traced scalars).

  Parameters keep their dtypes.
  """
  updates, opt_state = tx.update(grads, opt_state, params)

  def scaled(u, p):
    value = _value(p)
    decay = weight_decay * value if is_matrix(p) else jnp.zeros_like(value)
    return _replace(u, (lr * (_value(u) - decay)).astype(value.dtype))  # u already points downhill

  updates = _map_variables(scaled, updates, params)
  return optax.apply_updates(params, updates), opt_state


def weight_decay_at(
  opt_cfg: ml_collections.ConfigDict, step_tokens: int, peak_lr: float, train_tokens: int
) -> float:
  """The decay coefficient of a step: `weight_decay`, or the one that keeps the AdamW timescale.

  With `wd_timescale` = tau (a fraction of the run), lambda = B / (eta tau D) (Bergsma et al. 2025,
  Power Lines), B the step's tokens, D the run's tokens and eta the peak learning rate at this batch
  size: the weights stay an average over the same fraction of the run when the batch grows.
  """
  if opt_cfg.wd_timescale > 0:
    return step_tokens / (peak_lr * opt_cfg.wd_timescale * train_tokens)
  return opt_cfg.weight_decay
