"""Model FLOPs of a train step, for MFU: 6 x matmul parameters per token plus causal attention.

Per token, the forward pass does 2 FLOPs per weight of every matrix multiply (attention and MLP
projections and the output unembedding; the input embedding is a lookup, norms are negligible),
and the backward pass twice that: 6 N_mm. Attention scores and their weighted sum add 2 x 2 x d_attn
FLOPs per attended position in the forward pass; causally, token i attends to i + 1 positions, so
averaged over a sequence of S tokens it attends to (S + 1) / 2, giving 6 L d_attn (S + 1) for the
train step (d_attn = heads x head width). This is the count used by MFU in `benchmarks/`.
"""

import ml_collections

from cbs import models


def matmul_params(model_cfg: ml_collections.ConfigDict, vocab_size: int) -> int:
  """Weights used in matrix multiplies per token (everything but the embedding lookup and norms)."""
  dm = models.dims(model_cfg, vocab_size)
  attention = dm.d_model * dm.d_head * (2 * dm.num_heads + 2 * dm.num_kv_heads)
  mlp = (2 if model_cfg.name == "paper" else 3) * dm.d_model * dm.mlp_dim
  return dm.num_layers * (attention + mlp) + dm.d_model * dm.vocab_size


def train_flops_per_token(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                          seq_len: int) -> float:
  dm = models.dims(model_cfg, vocab_size)
  attention = 6 * dm.num_layers * dm.num_heads * dm.d_head * (seq_len + 1)
  return 6 * matmul_params(model_cfg, vocab_size) + attention
