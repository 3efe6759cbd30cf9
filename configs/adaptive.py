"""Adaptive-batch recipes of Lau et al. 2024 (arXiv 2412.21124): `--config=configs/adaptive.py:MODEL,RECIPE`.

MODEL: `microllama_300m`, `tinyllama_1.1b`, `openllama_3b` (Llama-style, C4 with the T5 vocabulary)
or `tiny` (a small Llama-style model on the embedded language, for CPU).
RECIPE: `norm` (the norm test grows the batch from small to large), `constant_small`,
`constant_large`, or `ramp` (stagewise: equal tokens at each doubling from small to large).
All recipes of a model see the same tokens and the same learning-rate schedule (a function of tokens,
not rescaled when the batch grows), so their losses compare at equal data. Shapes follow the paper;
the token budgets (about 20 tokens per parameter), context 512 and the batch range are this
project's choices, since the paper's exact values could not be confirmed.
"""

import ml_collections

from configs import base
from configs import c4

MODELS = {
  "microllama_300m": dict(
    num_layers=12,
    d_model=1024,
    num_heads=16,
    num_kv_heads=4,
    mlp_dim=5632,
    train_tokens=6_000_000_000,
  ),
  "tinyllama_1.1b": dict(
    num_layers=22,
    d_model=2048,
    num_heads=32,
    num_kv_heads=4,
    mlp_dim=5632,
    train_tokens=22_000_000_000,
  ),
  "openllama_3b": dict(
    num_layers=26,
    d_model=3200,
    num_heads=32,
    num_kv_heads=32,
    mlp_dim=8640,
    train_tokens=60_000_000_000,
  ),
  "tiny": dict(
    num_layers=2, d_model=64, num_heads=4, num_kv_heads=2, mlp_dim=192, train_tokens=2_000_000
  ),
}
RECIPES = ("norm", "constant_small", "constant_large", "ramp")
_STAGES = 5  # ramp: small, 2x, 4x, 8x, 16x = large


def get_config(spec: str = "tiny,norm") -> ml_collections.ConfigDict:
  name, _, recipe = spec.partition(",")
  if name not in MODELS or recipe not in RECIPES:
    raise ValueError(
      f"configs/adaptive.py:{spec}: use MODEL,RECIPE with MODEL in "
      f"{', '.join(MODELS)} and RECIPE in {', '.join(RECIPES)}"
    )
  shape = dict(MODELS[name])
  train_tokens = shape.pop("train_tokens")
  if name == "tiny":
    c = base.get_config()
    c.data.seq_len = 64
    c.data.synthetic.update(dict(num_states=32, vocab_size=32, zipf_exponent=1.5))
    small, c.eval.every_tokens, c.eval.tokens, c.log.every_steps = 16, 250_000, 32_768, 20
    c.checkpoint.every_tokens = 1_000_000
  else:
    c = c4.get_config("tfds,tiny")
    c.data.seq_len = 512
    small, c.eval.every_tokens, c.eval.tokens = 128, 250_000_000, 10_000_000
    c.checkpoint.every_tokens = 1_000_000_000
  c.model.update(dict(name="llama", **shape))
  c.train_tokens = train_tokens
  large = small * 2 ** (_STAGES - 1)
  c.optimizer.update(dict(name="adamw", lr=6e-4, b1=0.9, b2=0.95, weight_decay=0.1, clip=1.0))
  c.schedule.update(
    dict(name="cosine", warmup_tokens=train_tokens // 100, warmup_init=0.0, final_fraction=0.1)
  )
  c.ewa.decays = ()
  c.batch.update(dict(size=small, max_size=large, round="pow2", lr_scaling="none"))
  if recipe == "norm":
    c.batch.update(dict(schedule="norm", eta=0.1, test_interval=10, stats_ema=0.9))
  elif recipe == "constant_small":
    c.batch.update(dict(max_size=small))
  elif recipe == "constant_large":
    c.batch.update(dict(size=large))
  else:
    stage = train_tokens // _STAGES
    c.batch.update(
      dict(schedule="ramp", ramp=tuple((k * stage, small * 2**k) for k in range(_STAGES)))
    )
  return c
