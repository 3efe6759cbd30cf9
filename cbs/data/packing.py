"""Packs tokenized documents into fixed-length examples, EOS between documents (as seqio/t5x do).

Documents are concatenated, each followed by EOS, and cut into examples of `seq_len + 1` tokens whose
starts are `seq_len` apart, so every token is a target exactly once and no position is padding
(grain's concat-then-split cuts disjoint windows instead, which leaves one token per example that is
never a target). The position of the next example is (cursor of its first document, token offset):
small, exact and cheap to restore. A finite source ends with one last example padded with 0 and
masked out of the loss.
"""

import collections
from collections.abc import Iterator
from typing import Any

import numpy as np

Document = tuple[Any, np.ndarray]  # (cursor that restarts reading at this document, token ids)


def pack(
  documents: Iterator[Document], seq_len: int, eos_id: int, start_offset: int = 0
) -> Iterator[tuple[np.ndarray, int, dict]]:
  """Yields (tokens [seq_len + 1] int32, number of real tokens, position of the next example).

  The first `start_offset` tokens of the first document (counting its EOS) were consumed by
  earlier examples.
  """
  segments = collections.deque()  # [cursor, tokens with EOS, offset of first unread token]
  available = 0
  first = True
  for cursor, tokens in documents:
    tokens = np.append(np.asarray(tokens, np.int32), np.int32(eos_id))
    offset = start_offset if first else 0
    first = False
    segments.append([cursor, tokens, offset])
    available += len(tokens) - offset
    while available >= seq_len + 1:
      example = _peek(segments, seq_len + 1)
      available -= _consume(segments, seq_len)
      yield example, seq_len + 1, {"cursor": segments[0][0], "offset": int(segments[0][2])}
  if available > 1:  # the tail of a finite source: pad it, mask the padding
    example = _peek(segments, available)
    padded = np.zeros(seq_len + 1, np.int32)
    padded[:available] = example
    yield padded, available, {"cursor": None, "offset": 0}


def _peek(segments, count: int) -> np.ndarray:
  parts, needed = [], count
  for _, tokens, offset in segments:
    part = tokens[offset : offset + needed]
    parts.append(part)
    needed -= len(part)
    if not needed:
      break
  return np.concatenate(parts)


def _consume(segments, count: int) -> int:
  consumed = 0
  while consumed < count:
    segment = segments[0]
    take = min(count - consumed, len(segment[1]) - segment[2])
    segment[2] += take
    consumed += take
    if segment[2] == len(segment[1]):
      segments.popleft()
  return consumed
