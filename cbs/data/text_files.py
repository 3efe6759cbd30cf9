"""Documents from local or gs:// text files: `.txt` (one document per file) and `.jsonl` (one per line).

The global document order is the sorted file list, permuted by the seed at every epoch, then the
documents in each file; host h of H reads documents h, h+H, h+2H, ... of that order, so hosts are
disjoint and together cover the data whatever the number of files.
"""

from collections.abc import Iterator, Sequence
import json

import numpy as np
from etils import epath

SUFFIXES = (".txt", ".jsonl")


def resolve(files: str | Sequence[str]) -> list[epath.Path]:
  """Sorted paths matching the globs or paths (a list, or one comma-separated string).

  Raises ValueError naming an entry that matches nothing.
  """
  specs = [s for s in files.split(",") if s] if isinstance(files, str) else list(files)
  if not specs:
    raise ValueError("data.files is empty; give a glob or a list of .txt / .jsonl files")
  paths = []
  for spec in specs:
    path = epath.Path(spec)
    matches = sorted(path.parent.glob(path.name)) if any(c in spec for c in "*?[") else (
        [path] if path.exists() else [])
    if not matches:
      raise ValueError(f"data.files entry {spec!r} matches no file")
    for match in matches:
      if match.suffix not in SUFFIXES:
        raise ValueError(f"data.files has {str(match)!r}; allowed suffixes are {', '.join(SUFFIXES)}")
    paths += matches
  return sorted(set(paths), key=str)


def _file_documents(path: epath.Path, text_field: str) -> Iterator[str]:
  if path.suffix == ".txt":
    yield path.read_text()
    return
  with path.open() as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{number} is not valid JSON ({e.msg})") from None
      if text_field not in record:
        raise ValueError(f"{path}:{number} has no text field {text_field!r} (data.text_field); "
                         f"fields: {', '.join(sorted(record))}")
      yield record[text_field]


def read_documents(paths: Sequence[epath.Path], text_field: str) -> Iterator[str]:
  """All documents of the files, in the order given."""
  for path in paths:
    yield from _file_documents(path, text_field)


class TextFiles:
  """This host's documents of an endless sequence of seeded epochs over the files."""

  def __init__(self, paths: Sequence[epath.Path], text_field: str, seed: int,
               process_index: int = 0, process_count: int = 1):
    self._paths = list(paths)
    self._text_field = text_field
    self._seed = seed
    self._process = (process_index, process_count)

  def epoch_order(self, epoch: int) -> list[epath.Path]:
    order = np.random.default_rng([self._seed, epoch]).permutation(len(self._paths))
    return [self._paths[i] for i in order]

  def documents(self, start: int = 0, epochs: int | None = None) -> Iterator[str]:
    """This host's documents from its `start`-th on, for `epochs` epochs (None = forever)."""
    index, count = self._process
    produced = epoch = 0
    while epochs is None or epoch < epochs:
      seen_this_epoch = False
      for position, document in enumerate(read_documents(self.epoch_order(epoch), self._text_field)):
        if position % count != index:
          continue
        seen_this_epoch = True
        if produced >= start:
          yield document
        produced += 1
      if not seen_this_epoch:
        raise ValueError(f"data.files hold no document for host {index} of {count}")
      epoch += 1
