"""When a run evaluates: a fixed token cadence, or log-spaced token counts, denser where it matters.

Steps to a target loss are interpolated between the two evals that bracket the crossing, so the
error is set by the evals' spacing *relative* to the crossing: log-spaced points
(`eval.per_doubling` per doubling of tokens) give every run length and batch size the same relative
resolution, and a
dense window (`eval.dense_from_tokens` on, `eval.dense_per_doubling` per doubling) refines it where
the crossing is expected, near the data budget, as the CBS paper evaluates more often near the end.
"""

import math

import ml_collections


def _points_up_to(tokens: int, start: int, per_doubling: int) -> int:
  """How many of the points start x 2^(k / per_doubling), k = 0, 1, ..., are <= tokens."""
  if tokens < start:
    return 0
  return math.floor(per_doubling * math.log2(tokens / start) + 1e-9) + 1


def due(cfg: ml_collections.ConfigDict, tokens_before: int, tokens: int) -> bool:
  """Whether an eval point lies in (tokens_before, tokens]: the step that just ran crossed it."""
  if cfg.per_doubling > 0:
    sparse = (_points_up_to(tokens, cfg.every_tokens, cfg.per_doubling)
              > _points_up_to(tokens_before, cfg.every_tokens, cfg.per_doubling))
  else:
    sparse = cfg.every_tokens > 0 and tokens // cfg.every_tokens > tokens_before // cfg.every_tokens
  dense = cfg.dense_from_tokens > 0 and (
      _points_up_to(tokens, cfg.dense_from_tokens, cfg.dense_per_doubling)
      > _points_up_to(tokens_before, cfg.dense_from_tokens, cfg.dense_per_doubling))
  return sparse or dense
