"""When a run evaluates: a fixed token cadence, or log-spaced token counts, denser where it matters.

Steps to a target loss are interpolated between the two evals that bracket the crossing, so the
error is set by the evals' spacing *relative* to the crossing: log-spaced points
(`eval.per_doubling` per doubling of tokens) give every run length and batch size the same relative
resolution, and a
dense window (`eval.dense_from_tokens` on, `eval.dense_per_doubling` per doubling) refines it where
the crossing is expected, near the data budget, as the CBS paper evaluates more often near the end.
"""

import ml_collections

from cbs import cadence


def due(cfg: ml_collections.ConfigDict, tokens_before: int, tokens: int) -> bool:
  """Whether an eval point lies in (tokens_before, tokens]: the step that just ran crossed it."""
  if cfg.per_doubling > 0:
    sparse = cadence.crossed_log_spaced(tokens_before, tokens, cfg.every_tokens, cfg.per_doubling)
  else:
    sparse = cadence.crossed(tokens_before, tokens, cfg.every_tokens)
  dense = cfg.dense_from_tokens > 0 and cadence.crossed_log_spaced(
    tokens_before, tokens, cfg.dense_from_tokens, cfg.dense_per_doubling
  )
  return sparse or dense
