"""The transformers against an independent float64 numpy implementation, and their invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cbs import models
from configs import base
from tests.models import numpy_reference as reference

VOCAB = 24


def model_cfg(name, **kw):
  c = base.get_config().model
  c.update(dict(name=name, num_layers=2, d_model=32, num_heads=4, mlp_dim=48))
  c.update(kw)
  return c


def randomised(cfg):
  """A model whose norm scales are random too, so the reference checks that they are applied."""
  model = models.build_model(cfg, VOCAB, nnx.Rngs(1))
  params = nnx.state(model, nnx.Param)
  keys = iter(jax.random.split(jax.random.key(2), 100))
  noisy = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(next(keys), p.shape), params)
  nnx.update(model, noisy)
  return model, jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(noisy))


def np_forward(p, tokens, paper, tied=False):
  kind = "layernorm" if paper else "rmsnorm"
  x = p["embed"][tokens]
  for block in p["blocks"].values():
    a = block["attn"]
    h = reference.norm(x, block["attn_norm"]["scale"], kind)
    q, k, v = (np.einsum("bld,dhk->blhk", h, a[n]) for n in "qkv")
    if paper:
      # QK-norm over each token's whole query / key vector (all heads), as the paper's OLMo code
      q = reference.norm(q, a["q_norm"]["scale"], "layernorm", axes=(-2, -1))
      k = reference.norm(k, a["k_norm"]["scale"], "layernorm", axes=(-2, -1))
    q, k = reference.rope(q), reference.rope(k)
    heads = reference.causal_attention(q, k, v, 1 / np.sqrt(q.shape[-1]))
    x = x + np.einsum("blhk,hkd->bld", heads, a["o"])
    m = block["mlp"]
    h = reference.norm(x, block["mlp_norm"]["scale"], kind)
    if paper:
      h = reference.gelu(h @ m["wi"])
    else:
      gate = h @ m["wg"]
      h = gate / (1 + np.exp(-gate)) * (h @ m["wi"])
    x = x + h @ m["wo"]
  x = reference.norm(x, p["final_norm"]["scale"], kind)
  return x @ (p["embed"].T if tied else p["unembed"])


# ---- tests --------------------------------------------------------------------------------------

TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 10))


def test_paper_model_matches_numpy_reference():
  model, p = randomised(model_cfg("paper"))
  np.testing.assert_allclose(
    model(jnp.asarray(TOKENS)), np_forward(p, TOKENS, paper=True), rtol=2e-4, atol=2e-4
  )


def test_llama_model_with_gqa_and_tied_embeddings_matches_numpy_reference():
  model, p = randomised(model_cfg("llama", num_kv_heads=2, tie_embeddings=True))
  assert "unembed" not in p and p["blocks"][0]["attn"]["k"].shape == (32, 2, 8)
  np.testing.assert_allclose(
    model(jnp.asarray(TOKENS)), np_forward(p, TOKENS, False, tied=True), rtol=2e-4, atol=2e-4
  )


@pytest.mark.parametrize("name", ["paper", "llama"])
def test_causal_no_logit_depends_on_a_later_token(name):
  model = models.build_model(model_cfg(name), VOCAB, nnx.Rngs(0))
  changed = TOKENS.copy()
  changed[:, 6] = (changed[:, 6] + 1) % VOCAB
  before, after = model(jnp.asarray(TOKENS)), model(jnp.asarray(changed))
  np.testing.assert_array_equal(before[:, :6], after[:, :6])
  assert not np.allclose(before[:, 6:], after[:, 6:])


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model32 = models.build_model(model_cfg("paper"), VOCAB, nnx.Rngs(0))
  model16 = models.build_model(model_cfg("paper", dtype="bfloat16"), VOCAB, nnx.Rngs(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model16, nnx.Param)))
  out16 = model16(jnp.asarray(TOKENS))
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, model32(jnp.asarray(TOKENS)), atol=0.1)


def test_init_follows_fan_in_and_depth_scaling():
  cfg = model_cfg("paper", num_layers=8, d_model=256, num_heads=4, mlp_dim=1024)
  p = nnx.to_pure_dict(nnx.state(models.build_model(cfg, 512, nnx.Rngs(0)), nnx.Param))
  truncation = 0.9866  # std of a normal truncated at +-3 std, relative to the untruncated one
  for layer in (0, 7):  # residual projections: x 1/sqrt(2 (l+1)) (OLMo's init)
    block, depth = p["blocks"][layer], np.sqrt(2 * (layer + 1))
    assert np.std(block["mlp"]["wi"]) == pytest.approx(truncation / 16, rel=0.03)
    assert np.std(block["mlp"]["wo"]) == pytest.approx(truncation / 32 / depth, rel=0.03)
    assert np.std(block["attn"]["o"]) == pytest.approx(truncation / 16 / depth, rel=0.05)


@pytest.mark.parametrize("size", sorted(models.PAPER_SIZES))
def test_paper_sizes_have_12_L_d2_non_embedding_parameters(size):
  shape = models.PAPER_SIZES[size]
  counts = models.param_counts(model_cfg("paper", **shape), 32_000)
  assert counts["non_embedding"] == pytest.approx(
    12 * shape["num_layers"] * shape["d_model"] ** 2, rel=0.01
  )
  assert counts["total"] - counts["non_embedding"] == 2 * 32_000 * shape["d_model"]


@pytest.mark.parametrize(
  "kw,message",
  [
    (dict(name="gpt"), "model.name='gpt' is not one of: paper, llama"),
    (dict(name="llama", num_kv_heads=3), "model.num_kv_heads=3 must divide model.num_heads=4"),
    (dict(d_model=30), "model.d_model=30 is not divisible by model.num_heads=4"),
  ],
)
def test_bad_shapes_name_the_value(kw, message):
  with pytest.raises(ValueError, match=message):
    models.build_model(
      model_cfg("paper", **{k: v for k, v in kw.items() if k != "name"})
      if "name" not in kw
      else model_cfg(**kw),
      VOCAB,
      nnx.Rngs(0),
    )


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_rematerialisation_changes_memory_not_gradients(policy):
  def loss_and_grads(cfg):
    model = models.build_model(cfg, VOCAB, nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
      logits = nnx.merge(graphdef, p)(jnp.asarray(TOKENS))
      return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    return jax.value_and_grad(loss), params

  plain, params = loss_and_grads(model_cfg("paper"))
  remat, _ = loss_and_grads(model_cfg("paper", remat=policy))
  (value, grads), (value_r, grads_r) = jax.jit(plain)(params), jax.jit(remat)(params)
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  # One rematerialised region per block (`remat2` in the jaxpr), none without remat.
  assert str(jax.make_jaxpr(remat)(params)).count("remat2[") == 2
  assert "remat2[" not in str(jax.make_jaxpr(plain)(params))


def test_train_flops_per_token_match_a_hand_count():
  from cbs.metrics import flops

  # paper, L=2, d=32, 4 heads of 8, MLP 48, vocab 24, S=16.
  cfg = model_cfg("paper")
  per_layer = 4 * 32 * 32 + 2 * 32 * 48  # q, k, v, o + up, down
  matmul = 2 * per_layer + 32 * 24  # + unembedding
  assert flops.matmul_params(cfg, VOCAB) == matmul
  assert flops.train_flops_per_token(cfg, VOCAB, 16) == 6 * matmul + 6 * 2 * 32 * 17
  # Every counted weight is a parameter matrix: matmul weights = matrix params - input embedding.
  model = models.build_model(cfg, VOCAB, nnx.Rngs(0))
  weights = nnx.to_flat_state(nnx.state(model, nnx.Param))  # norm scales (2-D in QK-norm) are not
  matrices = sum(
    v.get_value().size
    for path, v in weights
    if v.get_value().ndim >= 2 and not any("norm" in str(k) for k in path)
  )
  assert matmul == matrices - 24 * 32
  # XLA's own count of the forward pass (full, unmasked attention scores): the matmuls and the
  # S x S attention, plus elementwise work (norms, GeLU, softmax, RoPE) that the model count leaves
  # out, which is ~28% at this width (exact GeLU's erf is a long polynomial) and shrinks as 1/d for
  # real models.
  graphdef, params = nnx.split(model, nnx.Param)
  forward = (
    jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))
    .lower(params, jnp.zeros((4, 16), jnp.int32))
    .compile()
  )
  xla = forward.cost_analysis()
  xla = (xla[0] if isinstance(xla, list) else xla)["flops"]
  expected = 4 * 16 * (2 * matmul + 2 * 2 * 2 * 32 * 16)
  assert expected < xla < 1.35 * expected
