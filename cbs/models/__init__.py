"""Language models: build one from `config.model` and count its parameters.

Everything else about models (layers, variants, the paper's sizes) lives in the submodules.
"""

import jax
import ml_collections
import numpy as np
from flax import nnx

from cbs.models.sizes import PAPER_SIZES
from cbs.models.transformer import Dims
from cbs.models.transformer import Transformer
from cbs.models.transformer import dims
from cbs.models.transformer import hidden_lr_scale
from cbs.parallel import axis_names

__all__ = ["PAPER_SIZES", "Dims", "build_model", "dims", "hidden_lr_scale", "param_counts"]


def build_model(
  model_cfg: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs
) -> Transformer:
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
  params = nnx.state(abstract, nnx.Param)
  for leaf in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    size = int(np.prod(leaf.shape))
    total += size
    if axis_names.VOCAB in (leaf.get_metadata().get("out_sharding") or ()):  # (un)embeddings
      embedding += size
  return {"total": total, "non_embedding": total - embedding}
