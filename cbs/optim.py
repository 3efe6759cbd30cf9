"""Optimizers: optax transforms with a unit learning rate, scaled by the host's lr(tokens) each step.

In every optimizer here the learning rate is optax's last scaling, and decoupled weight decay comes
just before it, so `lr * (update(lr=1) - wd * param)` is the optimizer at learning rate `lr`, with no
schedule inside the optimizer state (the schedule is a function of tokens and lives in
`schedules.py`). The decay coefficient is a step argument too, so it can follow the batch size
(`weight_decay_at`). Weight decay applies to matrices only (ndim >= 2): decaying norm scales towards
zero fights the normalisation; parameters of scanned blocks (under the state key `layers`) carry
a leading layer axis that does not count. This module builds transforms and applies updates; it
does not choose learning rates.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cbs.models.transformer import LAYERS

NAMES = ("adamw", "adam", "sgd", "lion", "adafactor", "signum")
DECAYING = ("adamw", "lion", "adafactor", "signum")  # the others have no decoupled weight decay


def is_matrix(path, leaf) -> bool:
  """Whether a parameter is a matrix (decayed, muP-scaled) rather than a vector (norm scales)."""
  stacked = getattr(path[0], "key", None) == LAYERS if path else False  # leading layer axis
  return leaf.ndim - stacked >= 2


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def _base(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  wd = 0.0  # applied in `apply_updates`, with the step's coefficient
  if cfg.name == "adamw":
    return optax.adamw(1.0, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=_decay_mask)
  if cfg.name == "adam":
    return optax.adam(1.0, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  if cfg.name == "sgd":
    return optax.sgd(1.0, momentum=cfg.b1 or None, nesterov=cfg.nesterov)
  if cfg.name == "lion":
    return optax.lion(1.0, b1=cfg.b1, b2=cfg.b2, weight_decay=wd, mask=_decay_mask)
  if cfg.name == "adafactor":
    return optax.adafactor(1.0, weight_decay_rate=wd or None, weight_decay_mask=_decay_mask)
  if cfg.name == "signum":
    return optax.chain(optax.ema(cfg.b1, debias=False), optax.scale_by_sign(),
                       optax.add_decayed_weights(wd, _decay_mask), optax.scale(-1.0))
  raise ValueError(f"optimizer.name={cfg.name!r} is not one of: {', '.join(NAMES)}")


def _is_hidden(path, leaf) -> bool:
  """A matrix other than the input/output embeddings (muP's "matrix-like" parameters)."""
  return is_matrix(path, leaf) and getattr(path[0], "key", None) not in ("embed", "unembed")


def scale_hidden(factor: float) -> optax.GradientTransformation:
  """Multiplies the updates of hidden matrices by `factor` (muP's per-layer Adam learning rate)."""

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * factor if _is_hidden(path, u) else u, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(opt_cfg: ml_collections.ConfigDict, hidden_lr_scale: float = 1.0) -> optax.GradientTransformation:
  """The configured optimizer at unit learning rate, after global-norm clipping if `clip > 0`.

  `hidden_lr_scale` multiplies the updates of hidden matrices (muP; 1 = standard).
  """
  parts = [optax.clip_by_global_norm(opt_cfg.clip)] if opt_cfg.clip > 0 else []
  parts.append(_base(opt_cfg))
  if hidden_lr_scale != 1.0:
    parts.append(scale_hidden(hidden_lr_scale))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def apply_updates(tx: optax.GradientTransformation, grads, opt_state, params, lr: jax.Array,
                  weight_decay: jax.Array | float = 0.0):
  """One update at learning rate `lr` with decoupled decay `weight_decay` (traced scalars).

  Parameters keep their dtypes.
  """
  updates, opt_state = tx.update(grads, opt_state, params)

  def scaled(path, u, p):
    decay = weight_decay * p if is_matrix(path, p) else jnp.zeros_like(p)
    return (lr * (u - decay)).astype(p.dtype)  # u already points downhill

  updates = jax.tree_util.tree_map_with_path(scaled, updates, params)
  return optax.apply_updates(params, updates), opt_state


def weight_decay_at(opt_cfg: ml_collections.ConfigDict, step_tokens: int, peak_lr: float,
                    train_tokens: int) -> float:
  """The decay coefficient of a step: `weight_decay`, or the one that keeps the AdamW timescale.

  With `wd_timescale` = tau (a fraction of the run), lambda = B / (eta tau D) (Bergsma et al. 2025,
  Power Lines), B the step's tokens, D the run's tokens and eta the peak learning rate at this batch
  size: the weights stay an average over the same fraction of the run when the batch grows.
  """
  if opt_cfg.wd_timescale > 0:
    return step_tokens / (peak_lr * opt_cfg.wd_timescale * train_tokens)
  return opt_cfg.weight_decay
