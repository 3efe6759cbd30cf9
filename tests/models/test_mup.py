"""muP: coordinate check across widths, equality with SP at the base width, per-layer lr."""

import jax
import numpy as np
import pytest
from flax import nnx

from analysis import coord_check
from cbs import models
from cbs.optim import optimizers as optim
from configs import base


def test_coordinate_check_mup_is_stable_and_sp_is_not():
  widths = (64, 512)
  sp = [coord_check.update_sizes("sp", w)["hidden"] for w in widths]
  mup = [coord_check.update_sizes("mup", w)["hidden"] for w in widths]
  # 8x the width: SP's hidden update grows by an order of magnitude, muP's stays put.
  assert sp[-1] / sp[0] > 8
  assert 0.5 < mup[-1] / mup[0] < 1.5


def test_mup_at_the_base_width_is_the_standard_model_except_attention_scale():
  cfg = base.get_config().model
  cfg.update(dict(name="paper", num_layers=2, d_model=64, num_heads=4, base_width=64))
  sp = models.build_model(cfg, 32, nnx.Rngs(0))
  cfg.param = "mup"
  mup = models.build_model(cfg, 32, nnx.Rngs(0))
  jax.tree.map(np.testing.assert_array_equal, nnx.state(sp, nnx.Param), nnx.state(mup, nnx.Param))
  assert models.hidden_lr_scale(cfg) == 1.0
  cfg.d_model = 256
  assert models.hidden_lr_scale(cfg) == pytest.approx(0.25)


def test_hidden_matrices_get_the_scaled_update_and_vectors_do_not():
  """Roles follow the logical axes: a vocab axis marks an embedding, a stacked layer axis no matrix."""

  def param(shape, axes):
    return nnx.Param(np.ones(shape), out_sharding=axes, eager_sharding=False)

  params = nnx.State(
    {
      "a": param((4, 2), ("vocab", "embed")),
      "b": param((2, 4), ("embed", "vocab")),
      "c": param((2, 2), ("embed", "mlp")),
      "d": param((3, 2), ("layers", "embed")),
      "e": param((3, 2, 2), ("layers", "embed", "mlp")),
    }
  )
  updates, _ = optim.scale_hidden(0.25).update(params, None)
  assert updates["c"][0, 0] == updates["e"][0, 0, 0] == 0.25
  assert updates["a"][0, 0] == updates["b"][0, 0] == updates["d"][0, 0] == 1.0
