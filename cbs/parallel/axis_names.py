"""Logical axis names: what each dimension of a parameter or activation holds, whatever the mesh.

Parameters and activations are annotated with these names; `mesh.rules` (`config_defaults`) maps
each to a mesh axis or to none, so changing parallelism is config-only. The model, the sharding
rules, the optimizer and validation all name axes through these constants, so a renamed axis
cannot leave one of them behind. `mesh.rules` in a config spells them as strings.
"""

BATCH = "batch"  # examples (and the rows of tokens they hold)
EMBED = "embed"  # the model width, d_model
HEADS = "heads"  # query heads
KV_HEADS = "kv_heads"  # key / value heads
HEAD_DIM = "head_dim"  # the width of one head
MLP = "mlp"  # the hidden width of the feed-forward block
VOCAB = "vocab"  # the (padded) vocabulary: rows of the embedding, columns of the unembedding
LAYERS = "layers"  # the stacked axis of scanned blocks' parameters
