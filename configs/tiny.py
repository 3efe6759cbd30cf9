"""A model small enough to train on a laptop CPU in a couple of minutes, on the embedded language.

The quick-start run and the tests start from this config. The automaton has a loss floor
(entropy rate) printed and logged at the start, so progress towards it is visible.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.train_tokens = 1_000_000
  c.model.num_layers = 2
  c.model.d_model = 64
  c.model.num_heads = 4
  c.data.seq_len = 64
  c.data.synthetic.num_states = 32
  c.data.synthetic.vocab_size = 32
  c.data.synthetic.zipf_exponent = 1.5
  c.batch.size = 32
  c.optimizer.lr = 3e-3
  c.optimizer.b1 = 0.95
  c.schedule.warmup_tokens = 100_000
  c.ewa.decays = (0.9, 0.99)
  c.eval.every_tokens = 200_000
  c.eval.tokens = 32_768
  c.eval.batch_size = 64
  c.checkpoint.every_tokens = 500_000
  c.log.every_steps = 50
  return c
