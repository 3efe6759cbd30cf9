"""Reads corpora tokenized once by `cbs.data.prepare`: ArrayRecord shards of one long token stream.

A split is the EOS-joined token stream of its documents, stored in records of `record_tokens`
tokens. Example i (any context length L) is tokens [i L, i L + L + 1) of the stream, the same
windows `packing.pack` cuts, so it is read by random access in O(1). Every epoch is a seeded grain
permutation of the examples; host h of H reads examples h, h+H, ... of it, so after any sequence
of batch sizes the hosts together have consumed exactly a prefix of the permuted global stream,
and a position is one integer per host.
"""

import hashlib
import json
from typing import Any

import grain
import numpy as np
from etils import epath

from cbs.data.stream import DataError

MANIFEST = "manifest.json"


def read_manifest(directory: str) -> dict[str, Any]:
  """The manifest of a prepared directory; raises ValueError naming the directory if unusable."""
  path = epath.Path(directory) / MANIFEST
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise ValueError(
      f"data.prepared_dir={directory!r} holds no {MANIFEST} (write one with "
      "'python -m cbs.data.prepare --files=... --vocab=... --output=DIR')"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e.msg})") from None


def record_digest(record: bytes) -> str:
  """A short digest of one record: the manifest keeps each shard's first one."""
  return hashlib.sha256(record).hexdigest()[:16]


def _records_of(shard: str) -> tuple[int, str]:
  """The number of records of one shard and its first record's digest; DataError naming it if it
  cannot be opened."""
  if not epath.Path(shard).exists():
    raise DataError(f"prepared shard {shard} is missing (listed in its {MANIFEST})")
  try:
    source = grain.sources.ArrayRecordDataSource([shard])
    return len(source), record_digest(source[0]) if len(source) else ""
  except Exception as e:  # array_record raises RuntimeError / ValueError for damaged files
    reason = f": {str(e).splitlines()[0][:200]}" if str(e).strip() else ""
    raise DataError(
      f"prepared shard {shard} cannot be read as ArrayRecord ({type(e).__name__}"
      f"{reason}): it is damaged or cut short"
    ) from None


def _checked_records(
  shards: list[str], expected: int, first_records: list[str] | None = None
) -> grain.sources.ArrayRecordDataSource:
  """The records of a split's shards, after checking them against the manifest.

  `cbs.data.prepare` fills every shard but the last with the same number of records and the
  token count fixes the total, so a truncated or missing shard shows in the counts; full shards
  swapped with each other hold equal counts, so the manifest also keeps each shard's first
  record's digest (`first_records`; manifests written before it have none: counts only).
  """
  opened = [_records_of(shard) for shard in shards]
  counts = [count for count, _ in opened]
  full = max(counts[:-1], default=expected)  # a shard cut short holds fewer records, never more
  wanted = [full] * (len(shards) - 1) + [expected - full * (len(shards) - 1)]
  for shard, count, want in zip(shards, counts, wanted):
    if count != want:
      raise DataError(
        f"prepared shard {shard} holds {count} records where its {MANIFEST} needs "
        f"{want} ({expected} in the split's {len(shards)} shards): it was cut short, "
        "replaced or swapped"
      )
  for shard, (_, digest), want in zip(shards, opened, first_records or ()):
    if digest != want:
      raise DataError(
        f"prepared shard {shard} does not start with the record its {MANIFEST} "
        "lists for it: it was replaced or swapped with another shard"
      )
  return grain.sources.ArrayRecordDataSource(shards)


class PreparedSplit:
  """Random access to the token stream of one split."""

  def __init__(self, directory: str, split: str):
    manifest = read_manifest(directory)
    if split not in manifest["splits"]:
      raise ValueError(
        f"data.prepared_dir={directory!r} has no split {split!r}; splits: "
        f"{', '.join(sorted(manifest['splits']))}"
      )
    info = manifest["splits"][split]
    self.tokens = int(info["tokens"])
    self.eos_id = int(manifest["eos_id"])
    self.vocab_size = int(manifest["vocab_size"])
    self._record_tokens = int(manifest["record_tokens"])
    self._dtype = np.dtype(manifest["dtype"])
    shards = [str(epath.Path(directory) / shard) for shard in info["shards"]]
    self._records = _checked_records(
      shards, -(-self.tokens // self._record_tokens), info.get("first_records")
    )

  def window(self, start: int, length: int) -> np.ndarray:
    """Tokens [start, start + length) of the stream, as int32."""
    first, last = start // self._record_tokens, (start + length - 1) // self._record_tokens
    parts = [np.frombuffer(self._records[r], self._dtype) for r in range(first, last + 1)]
    offset = start - first * self._record_tokens
    return np.concatenate(parts)[offset : offset + length].astype(np.int32)

  def num_examples(self, seq_len: int) -> int:
    """Whole examples of `seq_len + 1` tokens, `seq_len` apart, in one pass over the stream."""
    return (self.tokens - 1) // seq_len

  def examples(self, seq_len: int) -> grain.MapDataset:
    """Example i -> (tokens [seq_len + 1], seq_len + 1), in stream order."""
    count = self.num_examples(seq_len)
    if count < 1:
      raise ValueError(
        f"the prepared split has {self.tokens} tokens, fewer than one example of "
        f"data.seq_len + 1 = {seq_len + 1}"
      )
    return grain.MapDataset.range(count).map(
      lambda i: (self.window(i * seq_len, seq_len + 1), seq_len + 1)
    )


def host_examples(
  split: PreparedSplit,
  seq_len: int,
  seed: int,
  process_index: int,
  process_count: int,
  prefetch: int,
) -> grain.IterDataset:
  """This host's share of the endlessly repeated, per-epoch shuffled examples, read ahead by grain."""
  shuffled = split.examples(seq_len).shuffle(seed=seed).repeat()
  examples = shuffled[process_index::process_count].to_iter_dataset(
    grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  )
  # One read-ahead thread: grain's per-element thread pool contends for the GIL on reads this
  # small (measured: 5k examples/s with 2 threads against 18k/s with one).
  return grain.experimental.ThreadPrefetchIterDataset(
    examples, prefetch_buffer_size=max(prefetch, 1)
  )
