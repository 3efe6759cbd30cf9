"""The synthetic language (see `synthetic.py`) as a `Stream`: example i is a pure function of i.

The position is the number of examples consumed, so saving and restoring it is exact and changing
the batch size between steps neither skips nor repeats an example. The held-out set uses a separate
hash stream, so it never overlaps the training examples.
"""

import ml_collections
import numpy as np

from cbs.data import stream as data_lib
from cbs.data import synthetic

_TRAIN, _EVAL = 0, 1


class SyntheticStream:
  """Training examples 0, 1, 2, ... of the automaton's language; this host reads its share."""

  def __init__(
    self,
    automaton: synthetic.Automaton,
    seq_len: int,
    seed: int,
    process_index: int,
    process_count: int,
  ):
    self._automaton = automaton
    self._seq_len = seq_len
    self._seed = seed
    self._process = (process_index, process_count)
    self._position = 0

  def next_batch(self, global_batch: int) -> data_lib.Batch:
    rows = data_lib.host_rows(global_batch, *self._process)
    examples = np.arange(self._position + rows.start, self._position + rows.stop)
    self._position += global_batch
    return data_lib.to_batch(
      synthetic.sample(self._automaton, self._seed, _TRAIN, examples, self._seq_len + 1)
    )

  def get_state(self) -> dict:
    return {"position": self._position}

  def set_state(self, state: dict) -> None:
    self._position = int(state["position"])

  def close(self) -> None:
    """Nothing runs in the background: examples are computed when asked for."""


def make(
  config: ml_collections.ConfigDict, process_index: int, process_count: int
) -> data_lib.Data:
  cfg = config.data.synthetic
  automaton = synthetic.make_automaton(cfg.num_states, cfg.vocab_size, cfg.zipf_exponent, cfg.seed)
  seq_len, eval_batch = config.data.seq_len, config.eval.batch_size
  num_eval = data_lib.eval_examples(config)
  # The held-out set depends on the language only, so every run of a sweep is scored on the same text.
  eval_tokens = synthetic.sample(automaton, cfg.seed, _EVAL, np.arange(num_eval), seq_len + 1)
  rows = data_lib.host_rows(eval_batch, process_index, process_count)
  eval_batches = [
    data_lib.to_batch(eval_tokens[start : start + eval_batch][rows])
    for start in range(0, num_eval, eval_batch)
  ]
  floors = {
    "entropy_rate": synthetic.entropy_rate(automaton),
    "eval_bayes_loss": synthetic.bayes_loss(automaton, eval_tokens),
  }
  stream = SyntheticStream(automaton, seq_len, config.seed, process_index, process_count)
  return data_lib.Data(stream, eval_batches, automaton.vocab_size, floors)
