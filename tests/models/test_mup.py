"""muP: coordinate check across widths, equality with SP at the base width, per-layer lr."""

import jax
import numpy as np
import pytest
from flax import nnx

from analysis import coord_check
from cbs import models
from cbs import optim
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
  params = {"embed": np.ones((4, 2)), "unembed": np.ones((2, 4)),
            "blocks": {"w": np.ones((2, 2)), "scale": np.ones(2)}}
  updates, _ = optim.scale_hidden(0.25).update(params, None)
  assert updates["blocks"]["w"][0, 0] == 0.25
  assert updates["embed"][0, 0] == updates["unembed"][0, 0] == updates["blocks"]["scale"][0] == 1.0
