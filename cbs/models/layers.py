"""Building blocks of the transformers: normalisations, rotary embeddings, attention and MLPs.

Parameters are float32 and carry logical axis names (`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`,
`vocab`) that `cbs.parallel.sharding` maps to mesh axes; each layer casts them to its compute dtype at use.
Initialisation follows the "Mitchell" scheme of the OLMo code Zhang et al. 2024 trained with: every
weight is normal with std 1/sqrt(fan_in), truncated at 3 std, and projections that write into the
residual stream are scaled down by a further `depth_scale` (1/sqrt(2 (l+1)) at block l in OLMo,
`model.out_init`) so the stream's variance does not grow with depth. This module holds layers only; how they are stacked is `transformer.py`.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cbs.parallel.axis_names import BATCH
from cbs.parallel.axis_names import EMBED
from cbs.parallel.axis_names import HEAD_DIM
from cbs.parallel.axis_names import HEADS
from cbs.parallel.axis_names import KV_HEADS
from cbs.parallel.axis_names import MLP
from cbs.parallel.sharding import constrain


def param(rngs: nnx.Rngs, shape: Sequence[int], axes: tuple[str, ...], std: float) -> nnx.Param:
  """A float32 parameter drawn from a truncated normal, annotated with its logical axes."""
  init = nnx.initializers.truncated_normal(stddev=std, lower=-3.0, upper=3.0)
  return nnx.Param(nnx.with_partitioning(init, axes)(rngs.params(), tuple(shape), jnp.float32))


def ones_param(shape: tuple[int, ...], axes: tuple[str, ...]) -> nnx.Param:
  return nnx.Param(
    nnx.with_partitioning(nnx.initializers.ones, axes)(jax.random.key(0), shape, jnp.float32)
  )


class Norm(nnx.Module):
  """LayerNorm with a scale and no bias, or RMSNorm, over the trailing `len(axes)` dimensions;
  statistics in float32. Several dimensions: QK-norm over whole query / key vectors of all heads."""

  def __init__(
    self, size: int | tuple[int, ...], kind: str, eps: float, axes: str | tuple[str, ...] = EMBED
  ):
    shape = (size,) if isinstance(size, int) else tuple(size)
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    self.scale = ones_param(shape, axes)
    self.reduce = tuple(range(-len(shape), 0))
    self.kind = kind
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    if self.kind == "layernorm":
      x32 = x32 - x32.mean(axis=self.reduce, keepdims=True)
    x32 = x32 * jax.lax.rsqrt((x32 * x32).mean(axis=self.reduce, keepdims=True) + self.eps)
    return (x32 * self.scale[...]).astype(x.dtype)


def rope(x_BxLxHxK: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (rotate-half form) over the head dimension."""
  half = x_BxLxHxK.shape[-1] // 2
  freq_F = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_LxF = jnp.arange(x_BxLxHxK.shape[1], dtype=jnp.float32)[:, None] * freq_F[None, :]
  cos, sin = jnp.cos(angle_LxF)[None, :, None, :], jnp.sin(angle_LxF)[None, :, None, :]
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(
    x_BxLxHxK.dtype
  )


def attention_implementation(requested: str, platform: str, dtype) -> str:
  """`auto`: cuDNN flash attention on GPUs in 16-bit compute (it supports no float32), otherwise
  explicit einsums (the fastest of the XLA forms on CPU: 1.6x `jax.nn.dot_product_attention`'s)."""
  if requested != "auto":
    return requested
  return "cudnn" if platform == "gpu" and jnp.dtype(dtype).itemsize == 2 else "einsum"


def attend(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, scale: float | None, implementation: str):
  """Causal attention; grouped key/value heads are shared by `H / G` query heads each."""
  if implementation in ("xla", "cudnn"):
    return jax.nn.dot_product_attention(
      q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, is_causal=True, scale=scale, implementation=implementation
    )
  batch, length, heads, d_head = q_BxLxHxK.shape
  groups = k_BxLxGxK.shape[2]
  scale = 1.0 / math.sqrt(d_head) if scale is None else scale
  q_BxLxGxRxK = q_BxLxHxK.reshape(batch, length, groups, heads // groups, d_head)
  scores = jnp.einsum(
    "blgrk,bmgk->bgrlm", q_BxLxGxRxK * jnp.asarray(scale, q_BxLxHxK.dtype), k_BxLxGxK
  ).astype(jnp.float32)
  causal_LxL = jnp.tril(jnp.ones((length, length), bool))
  scores = jnp.where(causal_LxL, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_BxLxGxK.dtype)
  out = jnp.einsum("bgrlm,bmgk->blgrk", probs, v_BxLxGxK)
  return out.reshape(batch, length, heads, d_head)


class Attention(nnx.Module):
  """Causal multi-head attention with grouped key/value heads, RoPE and optional QK-norm.

  QK-norm `full` is a LayerNorm over each token's whole query (and key) vector, all heads together,
  as in the OLMo code of Zhang et al. 2024; `head` normalises each head on its own (a later common
  form); `none` has no QK-norm.
  """

  def __init__(
    self,
    d_model: int,
    num_heads: int,
    num_kv_heads: int,
    d_head: int,
    *,
    qk_norm: str,
    norm_eps: float,
    rope_theta: float,
    depth_scale: float,
    dtype,
    rngs: nnx.Rngs,
    scale: float | None = None,
    implementation: str = "einsum",
  ):
    in_std = 1.0 / math.sqrt(d_model)
    self.scale = scale  # of the scores; None = 1/sqrt(d_head)
    self.q = param(rngs, (d_model, num_heads, d_head), (EMBED, HEADS, HEAD_DIM), in_std)
    self.k = param(rngs, (d_model, num_kv_heads, d_head), (EMBED, KV_HEADS, HEAD_DIM), in_std)
    self.v = param(rngs, (d_model, num_kv_heads, d_head), (EMBED, KV_HEADS, HEAD_DIM), in_std)
    out_std = depth_scale / math.sqrt(num_heads * d_head)
    self.o = param(rngs, (num_heads, d_head, d_model), (HEADS, HEAD_DIM, EMBED), out_std)
    if qk_norm == "full":
      shapes = (
        ((num_heads, d_head), (HEADS, HEAD_DIM)),
        ((num_kv_heads, d_head), (KV_HEADS, HEAD_DIM)),
      )
    else:
      shapes = ((d_head, HEAD_DIM),) * 2
    norms = [Norm(size, "layernorm", norm_eps, axes) for size, axes in shapes]
    self.q_norm, self.k_norm = norms if qk_norm != "none" else (None, None)
    self.rope_theta = rope_theta
    self.dtype = dtype
    self.implementation = implementation  # see `attend`

  def __call__(self, x_BxLxD):
    batch, length, d_model = x_BxLxD.shape
    x_NxD = x_BxLxD.reshape(batch * length, d_model)

    def project(p):  # [N, D] @ [D, heads * K]: 2-D matmuls (a 3-D einsum is slower on XLA:CPU)
      w_DxHxK = p[...].astype(self.dtype)
      return (x_NxD @ w_DxHxK.reshape(d_model, -1)).reshape(batch, length, *w_DxHxK.shape[1:])

    q_BxLxHxK, k_BxLxGxK, v_BxLxGxK = project(self.q), project(self.k), project(self.v)
    q_BxLxHxK = constrain(q_BxLxHxK, BATCH, None, HEADS, None)
    k_BxLxGxK, v_BxLxGxK = (
      constrain(t, BATCH, None, KV_HEADS, None) for t in (k_BxLxGxK, v_BxLxGxK)
    )
    if self.q_norm is not None:
      q_BxLxHxK, k_BxLxGxK = self.q_norm(q_BxLxHxK), self.k_norm(k_BxLxGxK)
    q_BxLxHxK = rope(q_BxLxHxK, self.rope_theta)
    k_BxLxGxK = rope(k_BxLxGxK, self.rope_theta)
    out_BxLxHxK = constrain(
      attend(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, self.scale, self.implementation),
      BATCH,
      None,
      HEADS,
      None,
    )
    o_HKxD = self.o[...].astype(self.dtype).reshape(-1, d_model)
    return (out_BxLxHxK.reshape(batch * length, -1) @ o_HKxD).reshape(batch, length, d_model)


class Mlp(nnx.Module):
  """GeLU MLP (`gelu`: exact erf form, the paper's, or the tanh approximation) or gated SiLU MLP
  (`swiglu`), without biases."""

  def __init__(
    self,
    d_model: int,
    mlp_dim: int,
    kind: str,
    *,
    depth_scale: float,
    dtype,
    rngs: nnx.Rngs,
    gelu: str = "exact",
  ):
    in_std = 1.0 / math.sqrt(d_model)
    self.wi = param(rngs, (d_model, mlp_dim), (EMBED, MLP), in_std)
    self.wg = param(rngs, (d_model, mlp_dim), (EMBED, MLP), in_std) if kind == "swiglu" else None
    self.wo = param(rngs, (mlp_dim, d_model), (MLP, EMBED), depth_scale / math.sqrt(mlp_dim))
    self.dtype = dtype
    self.approximate = gelu == "tanh"

  def __call__(self, x_BxLxD):
    cast = lambda p: p[...].astype(self.dtype)
    x_NxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1])  # 2-D matmuls: see Attention
    h_NxF = constrain(x_NxD @ cast(self.wi), BATCH, MLP)  # N = B x L: rows split like B
    if self.wg is None:
      h_NxF = jax.nn.gelu(h_NxF, approximate=self.approximate)
    else:
      h_NxF = jax.nn.silu(constrain(x_NxD @ cast(self.wg), BATCH, MLP)) * h_NxF
    return (h_NxF @ cast(self.wo)).reshape(x_BxLxD.shape)
