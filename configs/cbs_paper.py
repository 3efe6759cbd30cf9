"""The critical-batch-size paper's protocol (Zhang et al. 2024): `--config=configs/cbs_paper.py:SPEC`.

SPEC is `SIZE` or `SIZE,xK`: SIZE one of 85m, 151m, 302m, 604m, 1.2b (C4, context 512) or `tiny`
(CPU, the embedded language); `xK` scales the data budget to K times Chinchilla (20 tokens per
non-embedding parameter), so data size varies independently of model size (K may be fractional,
e.g. x0.5). Protocol: AdamW with b1 0.95, eps 1e-8, no weight decay, clipping 1.0; constant learning
rate after a linear warmup from 0.1 x peak over 25% of the Chinchilla tokens (a fixed token budget,
whatever the batch size or K); five EWA decays evaluated together; evals log-spaced in tokens, dense
from D/2 on; batch 256 sequences (the paper's B_opt) unless overridden. Sweeps override batch.size,
optimizer.lr and optimizer.b2 (`configs/sweeps/cbs_151m.py`: the two-phase protocol).
"""

import ml_collections

from cbs import models
from configs import c4
from configs import tiny

SIZES = ("tiny", *models.PAPER_SIZES)
TOKENS_PER_PARAM = 20


def get_config(spec: str = "tiny") -> ml_collections.ConfigDict:
  size, _, scale = spec.partition(",")
  if size not in SIZES or (scale and not scale.startswith("x")):
    raise ValueError(
      f"configs/cbs_paper.py:{spec}: use SIZE or SIZE,xK with SIZE in "
      f"{', '.join(SIZES)} and K a number (data budget in Chinchilla units)"
    )
  multiple = float(scale[1:]) if scale else 1.0
  if size == "tiny":
    c = tiny.get_config()
    c.batch.size = 32
  else:
    c = c4.get_config(f"tfds,{size}")
    c.batch.size = 256
  non_embedding = models.param_counts(c.model, 32_000)["non_embedding"]
  chinchilla = TOKENS_PER_PARAM * non_embedding
  c.train_tokens = int(multiple * chinchilla)
  c.data_budget_tokens = c.train_tokens  # D: the target is the B_opt run's loss here
  c.optimizer.update(
    dict(name="adamw", lr=3.16e-3, b1=0.95, b2=0.95, eps=1e-8, weight_decay=0.0, clip=1.0)
  )
  c.schedule.update(
    dict(name="constant", warmup_tokens=min(chinchilla // 4, c.train_tokens), warmup_init=0.1)
  )
  c.ewa.decays = (0.99, 0.995, 0.998, 0.999, 0.9995)
  # Evals log-spaced in tokens (4 per doubling from D/64 on) and 16 per doubling (4.4% apart) from
  # D/2 on, where every batch crosses the target, up to the 8 D of a two-phase sweep; the paper's
  # schedule was ad hoc (denser near the end, every 100 steps at very large batches): this one gives
  # every batch size and run length the same relative resolution at the interpolated crossing.
  c.eval.every_tokens = max(c.train_tokens // 64, 1)
  c.eval.per_doubling = 4
  c.eval.dense_from_tokens = max(c.train_tokens // 2, 1)
  c.eval.dense_per_doubling = 16
  c.checkpoint.every_tokens = max(c.train_tokens // 10, 1)
  return c
