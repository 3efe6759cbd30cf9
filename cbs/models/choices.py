"""The model's named choices: variant, compute dtype, attention kernel, remat policy, parameterization.

Each is a `registry.Registry` whose entry is what the model builds from the name, with the checks
that only apply to that name.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from cbs.config import registry


@dataclasses.dataclass(frozen=True)
class Variant:
  """How one model variant builds its blocks."""

  norm: str  # layernorm | rmsnorm
  mlp: str  # gelu | swiglu
  qk_norm: str  # what model.qk_norm=auto means: full | none
  default_mlp_dim: Callable[[int], int]  # d_model -> MLP width when model.mlp_dim = -1
  check: registry.Check
  examples: tuple[registry.Overrides, ...] = ()


def _check_paper(config: ml_collections.ConfigDict) -> None:
  m = config.model
  registry.require(
    not m.tie_embeddings, "model.tie_embeddings=True: the paper model has untied embeddings"
  )
  registry.require(
    m.num_kv_heads in (-1, m.num_heads),
    f"model.num_kv_heads={m.num_kv_heads}: the paper model has no grouped-query "
    f"attention; use -1 or {m.num_heads}",
  )


MODELS: registry.Registry[Variant] = registry.Registry(
  "model.name",
  {
    "paper": Variant(
      "layernorm",
      "gelu",
      "full",
      lambda d: 4 * d,
      _check_paper,
      ({"model.tie_embeddings": True}, {"model.num_kv_heads": 2}),
    ),
    # 8/3 d keeps the parameter count of a 4 d GeLU MLP; rounded to 64
    "llama": Variant(
      "rmsnorm", "swiglu", "none", lambda d: 64 * math.ceil(8 * d / 3 / 64), registry.no_check
    ),
  },
  unknown_example="gpt",
)

DTYPES: registry.Registry[registry.Choice] = registry.Registry(
  "model.dtype",
  {
    "float32": registry.Choice(jnp.float32),
    "bfloat16": registry.Choice(jnp.bfloat16),
  },
  unknown_example="float16",
)


def _check_cudnn(config: ml_collections.ConfigDict) -> None:
  registry.require(
    jax.default_backend() == "gpu",
    f"model.attention='cudnn' needs a GPU (this backend is {jax.default_backend()}); "
    "use auto, einsum or xla",
  )
  registry.require(
    config.model.dtype == "bfloat16",
    f"model.attention='cudnn' with model.dtype={config.model.dtype!r}: cuDNN flash "
    "attention computes in 16 bits; use bfloat16",
  )


# The entry is the kernel `jax.nn.dot_product_attention` is asked for (None: explicit einsums;
# auto is resolved per platform by `layers.attention_implementation`).
ATTENTION: registry.Registry[registry.Choice] = registry.Registry(
  "model.attention",
  {
    "auto": registry.Choice("auto"),
    "einsum": registry.Choice("einsum"),
    "xla": registry.Choice("xla"),
    "cudnn": registry.Choice("cudnn", _check_cudnn, ({"model.attention": "cudnn"},)),
  },
  unknown_example="flash",
)

REMAT: registry.Registry[registry.Choice] = registry.Registry(
  "model.remat",
  {
    "none": registry.Choice(None),  # keep every activation
    "full": registry.Choice(jax.checkpoint_policies.nothing_saveable),  # keep each block's input
    # keep weight matmul outputs
    "dots": registry.Choice(jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
  },
  unknown_example="all",
)


def _check_mup(config: ml_collections.ConfigDict) -> None:
  registry.require(
    config.model.base_width > 0, f"model.base_width={config.model.base_width} must be positive"
  )


# The entry says whether muP's scalings apply (`transformer` applies them).
PARAMETERIZATIONS: registry.Registry[registry.Choice] = registry.Registry(
  "model.param",
  {
    "sp": registry.Choice(False),
    "mup": registry.Choice(True, _check_mup, ({"model.param": "mup", "model.base_width": 0},)),
  },
  unknown_example="ntk",
)

# The entry is the `layers.Attention` QK-norm (None: the variant's own, `Variant.qk_norm`).
QK_NORMS: registry.Registry[registry.Choice] = registry.Registry(
  "model.qk_norm",
  {
    "auto": registry.Choice(None),
    "full": registry.Choice("full"),  # over each token's whole query / key vector (OLMo's)
    "head": registry.Choice("head"),  # over each head on its own
    "none": registry.Choice("none"),
  },
  unknown_example="layer",
)

# The entry is the `layers.Mlp` GeLU form (the paper model's MLP activation).
GELUS: registry.Registry[registry.Choice] = registry.Registry(
  "model.gelu",
  {
    "exact": registry.Choice("exact"),  # erf, the paper's
    "tanh": registry.Choice("tanh"),  # the tanh approximation
  },
  unknown_example="relu",
)


def _per_layer(num_layers: int, layer):
  del num_layers
  return 1.0 / jnp.sqrt(2.0 * (jnp.asarray(layer, jnp.float32) + 1.0))


def _per_depth(num_layers: int, layer):
  del layer
  return 1.0 / math.sqrt(2 * num_layers)


# The entry: (num_layers, layer from 0, an array under the scanned stack) -> the extra init factor
# of the projections that write into the residual stream.
OUT_INITS: registry.Registry[registry.Choice] = registry.Registry(
  "model.out_init",
  {
    "layer": registry.Choice(_per_layer),  # 1/sqrt(2 (l+1)) at block l, OLMo's
    "depth": registry.Choice(_per_depth),  # 1/sqrt(2 L)
  },
  unknown_example="width",
)
