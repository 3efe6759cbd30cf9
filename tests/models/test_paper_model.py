"""The paper model's OLMo details against float64 numpy: QK-norm over whole query / key vectors,
residual-projection init 1/sqrt(2 fan_in (l+1)) per block, exact GeLU."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from cbs import models
from cbs.models import layers
from cbs.models import transformer
from configs import tiny
from tests.models import numpy_reference as reference


def np_attention_block(x, wq, wk, wv, wo, qk_axes):
  """Attention with LayerNorm of q and k over `qk_axes` of [B, L, H, K], before RoPE."""
  q, k, v = (np.einsum("bld,dhk->blhk", x, w) for w in (wq, wk, wv))
  q, k = (reference.norm(t, 1.0, "layernorm", axes=qk_axes) for t in (q, k))
  q, k = reference.rope(q), reference.rope(k)
  heads = reference.causal_attention(q, k, v, 1 / math.sqrt(q.shape[-1]))
  return np.einsum("blhk,hkd->bld", heads, wo)


@pytest.mark.parametrize("qk_norm,axes", [("full", (-2, -1)), ("head", (-1,))])
def test_qk_norm_normalises_whole_vectors_or_heads_like_numpy(qk_norm, axes):
  with nnx.use_eager_sharding(False):
    attn = layers.Attention(
      16,
      4,
      4,
      4,
      qk_norm=qk_norm,
      norm_eps=1e-5,
      rope_theta=10_000.0,
      depth_scale=1.0,
      dtype=np.float32,
      rngs=nnx.Rngs(0),
    )
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 5, 16)), np.float64)
  weights = [np.asarray(p[...], np.float64) for p in (attn.q, attn.k, attn.v, attn.o)]
  expected = np_attention_block(x, *weights, axes)
  np.testing.assert_allclose(attn(x.astype(np.float32)), expected, rtol=2e-4, atol=2e-5)
  other = np_attention_block(x, *weights, (-1,) if qk_norm == "full" else (-2, -1))
  assert np.abs(other - expected).max() > 1e-2  # the two forms differ: the test can tell them apart


def test_the_paper_model_uses_full_qk_norm_and_llama_none():
  config = tiny.get_config()
  assert transformer.qk_norm(config.model) == "full"
  config.model.name = "llama"
  assert transformer.qk_norm(config.model) == "none"
  config.model.qk_norm = "head"
  assert transformer.qk_norm(config.model) == "head"


def truncated_std(cut: float = 3.0) -> float:
  """Standard deviation of a standard normal truncated to [-cut, cut] (closed form)."""
  pdf = math.exp(-cut * cut / 2) / math.sqrt(2 * math.pi)
  return math.sqrt(1 - 2 * cut * pdf / math.erf(cut / math.sqrt(2)))


@pytest.mark.parametrize("scan", [False, True])
def test_residual_projections_init_with_one_over_sqrt_2_fan_in_layer(scan):
  config = tiny.get_config()
  config.model.update(num_layers=4, d_model=128, num_heads=4, scan_layers=scan)
  model = models.build_model(config.model, 32, nnx.Rngs(0))
  blocks = model.layers if scan else None
  for layer in range(4):
    block = model.blocks[layer] if not scan else None
    o = np.asarray((blocks.attn.o[...][layer] if scan else block.attn.o[...]), np.float64)
    wo = np.asarray((blocks.mlp.wo[...][layer] if scan else block.mlp.wo[...]), np.float64)
    for w, fan_in in ((o, 128), (wo, 512)):
      expected = truncated_std() / math.sqrt(2 * fan_in * (layer + 1))
      assert abs(w.std() / expected - 1) < 0.05, (layer, w.std(), expected)
  q = np.asarray(blocks.attn.q[...][3] if scan else model.blocks[3].attn.q[...], np.float64)
  assert abs(q.std() / (truncated_std() / math.sqrt(128)) - 1) < 0.05  # inputs: no depth factor


def test_depth_init_keeps_one_factor_for_every_block():
  config = tiny.get_config()
  config.model.update(num_layers=4, d_model=128, num_heads=4, out_init="depth")
  model = models.build_model(config.model, 32, nnx.Rngs(0))
  expected = truncated_std() / math.sqrt(2 * 128 * 4)
  for block in model.blocks:
    assert abs(np.asarray(block.attn.o[...]).std() / expected - 1) < 0.05


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
def test_mlp_gelu_matches_numpy(gelu):
  with nnx.use_eager_sharding(False):
    mlp = layers.Mlp(8, 32, "gelu", depth_scale=1.0, dtype=np.float32, rngs=nnx.Rngs(0), gelu=gelu)
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 3, 8)), np.float64) * 2
  wi, wo = (np.asarray(p[...], np.float64) for p in (mlp.wi, mlp.wo))
  h = x @ wi
  if gelu == "exact":
    act = reference.gelu(h)
  else:
    act = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
  np.testing.assert_allclose(mlp(x.astype(np.float32)), act @ wo, rtol=1e-4, atol=1e-5)


def test_unknown_model_choices_are_refused_by_name():
  config = tiny.get_config()
  config.model.gelu = "relu"
  with pytest.raises(ValueError, match="model.gelu='relu' is not one of: exact, tanh"):
    transformer.dims(config.model, 32)
