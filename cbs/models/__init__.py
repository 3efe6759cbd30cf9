"""Language models: build one from `config.model` and count its parameters.

Everything else about models (layers, variants, the paper's sizes) lives in the submodules.
"""

import jax
import ml_collections
import numpy as np
from flax import nnx

from cbs.models.layers import ATTENTION
from cbs.models.sizes import PAPER_SIZES
from cbs.models.transformer import (NAMES, PARAMETERIZATIONS, REMAT_POLICIES, Dims, Transformer,
                                    dims, hidden_lr_scale)

__all__ = ["ATTENTION", "NAMES", "PAPER_SIZES", "PARAMETERIZATIONS", "REMAT_POLICIES", "Dims",
           "build_model", "dims", "hidden_lr_scale", "param_counts"]


def build_model(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                rngs: nnx.Rngs) -> Transformer:
  """The model named by `model_cfg.name`; `vocab_size` is the data's (used when the knob is -1).

  Parameters only record their logical axes here; they are placed on devices by the jitted
  function that creates them (`cbs.train_state`), so building needs no mesh.
  """
  with nnx.use_eager_sharding(False):
    return Transformer(model_cfg, vocab_size, rngs)


def param_counts(model_cfg: ml_collections.ConfigDict, vocab_size: int) -> dict[str, int]:
  """Total and non-embedding parameters (embedding = input and output embedding matrices).

  Counted from abstract shapes, so it is instant for any size. Non-embedding counts are what
  scaling laws use (the paper's N ~ 12 L d^2).
  """
  abstract = nnx.eval_shape(lambda: build_model(model_cfg, vocab_size, nnx.Rngs(0)))
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(abstract, nnx.Param)):
    size = int(np.prod(leaf.shape))
    total += size
    if getattr(path[0], "key", None) in ("embed", "unembed"):
      embedding += size
  return {"total": total, "non_embedding": total - embedding}
