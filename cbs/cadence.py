"""Token cadences: whether the step that just ran crossed a point, whatever its batch size.

A run's duties (eval, checkpoint) fall on token counts, not steps, so a batch that grows mid-run
keeps them where they were. A step covers the tokens (before, after]; a point lies in it or not.
Two kinds of points: every multiple of a fixed number of tokens, and log-spaced points
start x 2^(k / per_doubling), k = 0, 1, ...
"""

import math


def crossed(tokens_before: int, tokens_after: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (before, after]; never for `every` <= 0."""
  return every > 0 and tokens_after // every > tokens_before // every


def log_points_up_to(tokens: int, start: int, per_doubling: int) -> int:
  """How many of the points start x 2^(k / per_doubling), k = 0, 1, ..., are <= tokens."""
  if tokens < start:
    return 0
  return math.floor(per_doubling * math.log2(tokens / start) + 1e-9) + 1


def crossed_log_spaced(
  tokens_before: int, tokens_after: int, start: int, per_doubling: int
) -> bool:
  """Whether a log-spaced point from `start` on lies in (before, after]."""
  return log_points_up_to(tokens_after, start, per_doubling) > log_points_up_to(
    tokens_before, start, per_doubling
  )
