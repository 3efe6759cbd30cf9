"""Optimizers: optax transforms with a unit learning rate, scaled by the host's lr(tokens) each step.

In every optimizer here the learning rate is optax's last scaling, and decoupled weight decay comes
before it, so `lr * update(lr=1)` is the optimizer at learning rate `lr`, with no schedule inside the
optimizer state (the schedule is a function of tokens and lives in `schedules.py`). Weight decay
applies to matrices only (ndim >= 2): decaying norm scales towards zero fights the normalisation.
This module builds transforms and applies updates; it does not choose learning rates.
"""

import jax
import ml_collections
import optax

NAMES = ("adamw", "adam", "sgd", "lion", "adafactor", "signum")


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _base(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  wd = cfg.weight_decay
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


def make(opt_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The configured optimizer at unit learning rate, after global-norm clipping if `clip > 0`."""
  base = _base(opt_cfg)
  if opt_cfg.clip > 0:
    return optax.chain(optax.clip_by_global_norm(opt_cfg.clip), base)
  return base


def apply_updates(tx: optax.GradientTransformation, grads, opt_state, params, lr: jax.Array):
  """One update at learning rate `lr` (a traced scalar); parameters keep their dtypes."""
  updates, opt_state = tx.update(grads, opt_state, params)
  updates = jax.tree.map(lambda u, p: (lr * u).astype(p.dtype), updates, params)
  return optax.apply_updates(params, updates), opt_state
