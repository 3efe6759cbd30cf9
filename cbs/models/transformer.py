"""Decoder-only transformer language models: the CBS paper's variant and a Llama-style variant.

`paper` (Zhang et al. 2024, their OLMo code): pre-LN blocks with scale-only LayerNorm, QK-LayerNorm
over whole query / key vectors, RoPE, exact-GeLU MLP (4 d), no biases, untied input/output
embeddings, residual projections initialised with std 1/sqrt(2 fan_in (l+1)) at block l. `llama`:
RMSNorm, SwiGLU MLP, grouped-query attention, optionally tied embeddings. Both compute in `model.dtype` and return float32 logits.
This module resolves the config's shape knobs (`-1` = the variant's default) and stacks the layers.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from cbs.models import choices
from cbs.models import layers
from cbs.parallel.axis_names import BATCH
from cbs.parallel.axis_names import EMBED
from cbs.parallel.axis_names import LAYERS
from cbs.parallel.axis_names import VOCAB
from cbs.parallel.sharding import constrain


def hidden_lr_scale(model_cfg: ml_collections.ConfigDict) -> float:
  """muP's Adam learning-rate factor of hidden matrices: base_width / width (1 under SP)."""
  mup = choices.PARAMETERIZATIONS[model_cfg.get("param", "sp")].build
  return model_cfg.base_width / model_cfg.d_model if mup else 1.0


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
  variant = choices.MODELS[model_cfg.name]
  for choice, name, default in (
    (choices.QK_NORMS, "qk_norm", "auto"),
    (choices.GELUS, "gelu", "exact"),
    (choices.OUT_INITS, "out_init", "layer"),
  ):
    choice[model_cfg.get(name, default)]  # a model built without `validation` is checked too
  d, heads = model_cfg.d_model, model_cfg.num_heads
  for key in ("num_layers", "d_model", "num_heads"):
    if model_cfg[key] <= 0:
      raise ValueError(f"model.{key}={model_cfg[key]} must be positive")
  kv_heads = heads if model_cfg.num_kv_heads == -1 else model_cfg.num_kv_heads
  if kv_heads <= 0 or heads % kv_heads:
    raise ValueError(f"model.num_kv_heads={kv_heads} must divide model.num_heads={heads}")
  if model_cfg.d_head == -1 and d % heads:
    raise ValueError(
      f"model.d_model={d} is not divisible by model.num_heads={heads}; set model.d_head explicitly"
    )
  d_head = d // heads if model_cfg.d_head == -1 else model_cfg.d_head
  if d_head <= 0 or d_head % 2:
    raise ValueError(f"model.d_head={d_head} must be a positive even number (RoPE rotates pairs)")
  mlp_dim = model_cfg.mlp_dim
  if mlp_dim == -1:
    mlp_dim = variant.default_mlp_dim(d)
  vocab = vocab_size if model_cfg.vocab_size == -1 else model_cfg.vocab_size
  if mlp_dim <= 0 or vocab < vocab_size:
    raise ValueError(
      f"model.mlp_dim={mlp_dim} must be positive and model.vocab_size={vocab} at "
      f"least the data's vocabulary ({vocab_size})"
    )
  return Dims(model_cfg.num_layers, d, heads, kv_heads, d_head, mlp_dim, vocab)


def qk_norm(model_cfg: ml_collections.ConfigDict) -> str:
  """`model.qk_norm` resolved: auto = the variant's own (full for the paper model, none for llama)."""
  chosen = choices.QK_NORMS[model_cfg.get("qk_norm", "auto")].build
  return chosen or choices.MODELS[model_cfg.name].qk_norm


def depth_scale(model_cfg: ml_collections.ConfigDict, num_layers: int, layer):
  """Extra init factor of the projections writing into the residual stream at block `layer` (from
  0; an array under the scanned stack): see `choices.OUT_INITS`.
  """
  return choices.OUT_INITS[model_cfg.get("out_init", "layer")].build(num_layers, layer)


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ml_collections.ConfigDict, dm: Dims, rngs: nnx.Rngs, layer=0):
    variant = choices.MODELS[cfg.name]
    dtype = choices.DTYPES[cfg.dtype].build
    scale = depth_scale(cfg, dm.num_layers, layer)
    mup = choices.PARAMETERIZATIONS[cfg.get("param", "sp")].build
    self.attn_norm = layers.Norm(dm.d_model, variant.norm, cfg.norm_eps)
    self.attn = layers.Attention(
      dm.d_model,
      dm.num_heads,
      dm.num_kv_heads,
      dm.d_head,
      qk_norm=qk_norm(cfg),
      norm_eps=cfg.norm_eps,
      rope_theta=cfg.rope_theta,
      depth_scale=scale,
      dtype=dtype,
      rngs=rngs,
      scale=1.0 / dm.d_head if mup else None,
      implementation=layers.attention_implementation(
        cfg.get("attention", "auto"), jax.default_backend(), dtype
      ),
    )
    self.mlp_norm = layers.Norm(dm.d_model, variant.norm, cfg.norm_eps)
    self.mlp = layers.Mlp(
      dm.d_model,
      dm.mlp_dim,
      variant.mlp,
      depth_scale=scale,
      dtype=dtype,
      rngs=rngs,
      gelu=cfg.get("gelu", "exact"),
    )

  def __call__(self, x_BxLxD):
    x_BxLxD = constrain(x_BxLxD + self.attn(self.attn_norm(x_BxLxD)), BATCH, None, None)
    return constrain(x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD)), BATCH, None, None)


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
    mup = choices.PARAMETERIZATIONS[cfg.get("param", "sp")].build
    # muP: the embedding's init does not shrink with width, the logits are scaled by
    # base_width / width (at base width both equal the standard parameterization).
    embed_std = 1.0 / math.sqrt(cfg.base_width) if mup else std
    self.output_scale = cfg.base_width / dm.d_model if mup else 1.0
    self.embed = layers.param(rngs, (dm.vocab_size, dm.d_model), (VOCAB, EMBED), embed_std)
    self.scan = cfg.get("scan_layers", False)
    if self.scan:  # one Block whose parameters carry a leading `layers` axis
      self.layers = _stacked_blocks(cfg, dm, rngs)
    else:
      self.blocks = nnx.List([Block(cfg, dm, rngs, i) for i in range(dm.num_layers)])
    self.final_norm = layers.Norm(dm.d_model, choices.MODELS[cfg.name].norm, cfg.norm_eps)
    self.unembed = (
      None if self.tied else layers.param(rngs, (dm.d_model, dm.vocab_size), (EMBED, VOCAB), std)
    )
    self.dtype = choices.DTYPES[cfg.dtype].build
    self.remat = cfg.get("remat", "none")

  def features(self, tokens_BxL):
    """The residual stream after the last block, before the final norm (muP coordinate checks)."""
    x_BxLxD = constrain(self.embed[...].astype(self.dtype)[tokens_BxL], BATCH, None, None)
    apply = lambda block, x: block(x)
    if self.remat != "none":  # trade compute for activation memory
      apply = nnx.remat(apply, policy=choices.REMAT[self.remat].build)
    if self.scan:  # traced and compiled once for all layers: compile time independent of depth
      return nnx.scan(lambda x, block: apply(block, x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(
        x_BxLxD, self.layers
      )
    for block in self.blocks:
      x_BxLxD = apply(block, x_BxLxD)
    return x_BxLxD

  def __call__(self, tokens_BxL):
    x_BxLxD = self.final_norm(self.features(tokens_BxL))
    if self.tied:
      unembed_DxV = self.embed[...].astype(self.dtype).T
    else:
      unembed_DxV = self.unembed[...].astype(self.dtype)
    logits_NxV = constrain(
      x_BxLxD.reshape(-1, x_BxLxD.shape[-1]) @ unembed_DxV,  # 2-D: see
      BATCH,
      VOCAB,
    )  # layers.Attention; each chip its own rows' logits
    logits_BxLxV = logits_NxV.reshape(*tokens_BxL.shape, -1)
    return (logits_BxLxV * self.output_scale).astype(jnp.float32)
