"""Decoder-only transformer language models: the CBS paper's variant and a Llama-style variant.

`paper` (Zhang et al. 2024, their OLMo code): pre-LN blocks with scale-only LayerNorm, QK-LayerNorm
over whole query / key vectors, RoPE, exact-GeLU MLP (4 d), no biases, untied input/output
embeddings, residual projections initialised with std 1/sqrt(2 fan_in (l+1)) at block l. `llama`: RMSNorm, SwiGLU MLP, grouped-query
attention, optionally tied embeddings. Both compute in `model.dtype` and return float32 logits.
This module resolves the config's shape knobs (`-1` = the variant's default) and stacks the layers.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from cbs.models import layers

NAMES = ("paper", "llama")
OUT_INITS = ("layer", "depth")  # see `depth_scale`
LAYERS = "layers"  # logical axis (and state key) of the stacked parameters of scanned blocks
PARAMETERIZATIONS = ("sp", "mup")


def hidden_lr_scale(model_cfg: ml_collections.ConfigDict) -> float:
  """muP's Adam learning-rate factor of hidden matrices: base_width / width (1 under SP)."""
  return model_cfg.base_width / model_cfg.d_model if model_cfg.get("param", "sp") == "mup" else 1.0
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Dims:
  """The model's shape with every default resolved."""
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  d_head: int
  mlp_dim: int
  vocab_size: int


def dims(model_cfg: ml_collections.ConfigDict, vocab_size: int) -> Dims:
  """Resolves `-1` knobs; raises ValueError naming any value that cannot work."""
  if model_cfg.name not in NAMES:
    raise ValueError(f"model.name={model_cfg.name!r} is not one of: {', '.join(NAMES)}")
  if model_cfg.dtype not in _DTYPES:
    raise ValueError(f"model.dtype={model_cfg.dtype!r} is not one of: {', '.join(_DTYPES)}")
  for key, allowed in (("qk_norm", ("auto", *layers.QK_NORMS)), ("gelu", layers.GELUS),
                       ("out_init", OUT_INITS)):
    if model_cfg.get(key, allowed[0]) not in allowed:
      raise ValueError(f"model.{key}={model_cfg[key]!r} is not one of: {', '.join(allowed)}")
  d, heads = model_cfg.d_model, model_cfg.num_heads
  for key in ("num_layers", "d_model", "num_heads"):
    if model_cfg[key] <= 0:
      raise ValueError(f"model.{key}={model_cfg[key]} must be positive")
  kv_heads = heads if model_cfg.num_kv_heads == -1 else model_cfg.num_kv_heads
  if kv_heads <= 0 or heads % kv_heads:
    raise ValueError(f"model.num_kv_heads={kv_heads} must divide model.num_heads={heads}")
  if model_cfg.name == "paper" and kv_heads != heads:
    raise ValueError(f"model.num_kv_heads={kv_heads}: the paper model has no grouped-query "
                     f"attention; use -1 or {heads}")
  if model_cfg.d_head == -1 and d % heads:
    raise ValueError(f"model.d_model={d} is not divisible by model.num_heads={heads}; "
                     "set model.d_head explicitly")
  d_head = d // heads if model_cfg.d_head == -1 else model_cfg.d_head
  if d_head <= 0 or d_head % 2:
    raise ValueError(f"model.d_head={d_head} must be a positive even number (RoPE rotates pairs)")
  mlp_dim = model_cfg.mlp_dim
  if mlp_dim == -1:  # llama: 8/3 d keeps the parameter count of a 4 d GeLU MLP; rounded to 64
    mlp_dim = 4 * d if model_cfg.name == "paper" else 64 * math.ceil(8 * d / 3 / 64)
  vocab = vocab_size if model_cfg.vocab_size == -1 else model_cfg.vocab_size
  if mlp_dim <= 0 or vocab < vocab_size:
    raise ValueError(f"model.mlp_dim={mlp_dim} must be positive and model.vocab_size={vocab} at "
                     f"least the data's vocabulary ({vocab_size})")
  return Dims(model_cfg.num_layers, d, heads, kv_heads, d_head, mlp_dim, vocab)


REMAT_POLICIES = {
    "full": None,  # keep only each block's input
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight matmul outputs
}


def qk_norm(model_cfg: ml_collections.ConfigDict) -> str:
  """`model.qk_norm` resolved: auto = full for the paper model, none for llama."""
  choice = model_cfg.get("qk_norm", "auto")
  return ("full" if model_cfg.name == "paper" else "none") if choice == "auto" else choice


def depth_scale(model_cfg: ml_collections.ConfigDict, num_layers: int, layer):
  """Extra init factor of the projections writing into the residual stream at block `layer` (from
  0; an array under the scanned stack): 1/sqrt(2 (l+1)) (OLMo's, `layer`) or 1/sqrt(2 L) (`depth`).
  """
  if model_cfg.get("out_init", "layer") == "depth":
    return 1.0 / math.sqrt(2 * num_layers)
  return 1.0 / jnp.sqrt(2.0 * (jnp.asarray(layer, jnp.float32) + 1.0))


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ml_collections.ConfigDict, dm: Dims, rngs: nnx.Rngs, layer=0):
    paper = cfg.name == "paper"
    norm = "layernorm" if paper else "rmsnorm"
    dtype = _DTYPES[cfg.dtype]
    scale = depth_scale(cfg, dm.num_layers, layer)
    self.attn_norm = layers.Norm(dm.d_model, norm, cfg.norm_eps)
    self.attn = layers.Attention(dm.d_model, dm.num_heads, dm.num_kv_heads, dm.d_head,
                                 qk_norm=qk_norm(cfg), norm_eps=cfg.norm_eps,
                                 rope_theta=cfg.rope_theta, depth_scale=scale, dtype=dtype, rngs=rngs,
                                 scale=1.0 / dm.d_head if cfg.get("param", "sp") == "mup" else None,
                                 implementation=layers.attention_implementation(
                                     cfg.get("attention", "auto"), jax.default_backend(), dtype))
    self.mlp_norm = layers.Norm(dm.d_model, norm, cfg.norm_eps)
    self.mlp = layers.Mlp(dm.d_model, dm.mlp_dim, "gelu" if paper else "swiglu",
                          depth_scale=scale, dtype=dtype, rngs=rngs,
                          gelu=cfg.get("gelu", "exact"))

  def __call__(self, x_BxLxD):
    x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD))
    return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


def _stacked_blocks(cfg: ml_collections.ConfigDict, dm: Dims, rngs: nnx.Rngs) -> Block:
  """`num_layers` independently initialised blocks as one Block of stacked parameters."""

  @nnx.split_rngs(splits=dm.num_layers)
  @nnx.vmap(in_axes=(0, 0), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
  def create(rngs: nnx.Rngs, layer) -> Block:
    return Block(cfg, dm, rngs, layer)

  return create(rngs, jnp.arange(dm.num_layers))


class Transformer(nnx.Module):
  """Token ids [B, L] -> next-token logits [B, L, V] (float32)."""

  def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs):
    dm = dims(cfg, vocab_size)
    self.tied = cfg.name == "llama" and cfg.tie_embeddings
    if cfg.name == "paper" and cfg.tie_embeddings:
      raise ValueError("model.tie_embeddings=True: the paper model has untied embeddings")
    std = 1.0 / math.sqrt(dm.d_model)
    mup = cfg.get("param", "sp") == "mup"
    # muP: the embedding's init does not shrink with width, the logits are scaled by
    # base_width / width (at base width both equal the standard parameterization).
    embed_std = 1.0 / math.sqrt(cfg.base_width) if mup else std
    self.output_scale = cfg.base_width / dm.d_model if mup else 1.0
    self.embed = layers.param(rngs, (dm.vocab_size, dm.d_model), ("vocab", "embed"), embed_std)
    self.scan = cfg.get("scan_layers", False)
    if self.scan:  # one Block whose parameters carry a leading `layers` axis
      self.layers = _stacked_blocks(cfg, dm, rngs)
    else:
      self.blocks = nnx.List([Block(cfg, dm, rngs, i) for i in range(dm.num_layers)])
    self.final_norm = layers.Norm(dm.d_model, "layernorm" if cfg.name == "paper" else "rmsnorm",
                                  cfg.norm_eps)
    self.unembed = None if self.tied else layers.param(
        rngs, (dm.d_model, dm.vocab_size), ("embed", "vocab"), std)
    self.dtype = _DTYPES[cfg.dtype]
    self.remat = cfg.get("remat", "none")

  def features(self, tokens_BxL):
    """The residual stream after the last block, before the final norm (muP coordinate checks)."""
    x_BxLxD = self.embed[...].astype(self.dtype)[tokens_BxL]
    apply = lambda block, x: block(x)
    if self.remat != "none":  # trade compute for activation memory
      apply = nnx.remat(apply, policy=REMAT_POLICIES[self.remat])
    if self.scan:  # traced and compiled once for all layers: compile time independent of depth
      return nnx.scan(lambda x, block: apply(block, x), in_axes=(nnx.Carry, 0),
                      out_axes=nnx.Carry)(x_BxLxD, self.layers)
    for block in self.blocks:
      x_BxLxD = apply(block, x_BxLxD)
    return x_BxLxD

  def __call__(self, tokens_BxL):
    x_BxLxD = self.final_norm(self.features(tokens_BxL))
    if self.tied:
      unembed_DxV = self.embed[...].astype(self.dtype).T
    else:
      unembed_DxV = self.unembed[...].astype(self.dtype)
    logits_NxV = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]) @ unembed_DxV  # 2-D: see layers.Attention
    logits_BxLxV = logits_NxV.reshape(*tokens_BxL.shape, -1)
    return (logits_BxLxV * self.output_scale).astype(jnp.float32)
