"""Documents from local or gs:// text files: `.txt` (one document each), `.jsonl` and `.parquet`.

The files are cut into *pieces*: a `.txt` file, a byte range of a `.jsonl` file (lines belong to
the piece their first byte lies in), a row group of a `.parquet` file (the format Hugging Face
datasets export to). Training reads `.jsonl` in pieces of 1/4096 of the corpus's `.jsonl` bytes
(4 KiB to 64 MiB), so even a corpus in one file is read from all over within an epoch. Every epoch
permutes the pieces with the seed, and host h of H reads pieces h, h+H, ... of that order, so each
host reads only its own bytes and the hosts together read every document once per epoch. A
position is [epoch, file, piece, byte offset or row]: reading restarts there by a seek, so resuming
costs the same at any point of the run. It names its file, so a file list that changed since is
either continued where that file's piece now lies or refused in one line.
"""

import dataclasses
import json
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np
from etils import epath

from cbs.data.stream import DataError

SUFFIXES = (".txt", ".jsonl", ".parquet")
JSONL_PIECE_BYTES = 64 << 20  # large enough to stream well, small enough to spread over hosts
PIECES_PER_CORPUS = 4096  # training pieces of .jsonl: an epoch reads them in a seeded order
MIN_PIECE_BYTES = 4 << 10

Cursor = list  # [epoch, file path, piece start (byte, row group or 0), byte offset / row]


def resolve(files: str | Sequence[str]) -> list[epath.Path]:
  """Sorted paths matching the globs or paths (a list, or one comma-separated string).

  Raises ValueError naming an entry that matches nothing.
  """
  specs = [s for s in files.split(",") if s] if isinstance(files, str) else list(files)
  if not specs:
    raise ValueError("data.files is empty; give globs or a list of .txt / .jsonl / .parquet files")
  paths = []
  for spec in specs:
    path = epath.Path(spec)
    matches = (
      sorted(path.parent.glob(path.name))
      if any(c in spec for c in "*?[")
      else ([path] if path.exists() else [])
    )
    if not matches:
      raise ValueError(f"data.files entry {spec!r} matches no file")
    for match in matches:
      if match.suffix not in SUFFIXES:
        raise ValueError(
          f"data.files has {str(match)!r}; allowed suffixes are {', '.join(SUFFIXES)}"
        )
    paths += matches
  return sorted(set(paths), key=str)


@dataclasses.dataclass(frozen=True)
class Piece:
  """A unit of reading: a whole .txt file, bytes [start, stop) of a .jsonl, a .parquet row group."""

  path: epath.Path
  start: int
  stop: int


def _parquet_file(path: epath.Path):
  import pyarrow.parquet as pq  # only for Parquet corpora  # noqa: PLC0415

  return pq.ParquetFile(path.open("rb"))


def pieces(
  paths: Sequence[epath.Path], text_field: str, jsonl_piece_bytes: int = JSONL_PIECE_BYTES
) -> list[Piece]:
  """The pieces of all files, in file order; checks Parquet schemas before anything is read."""
  found = []
  for path in map(epath.Path, paths):
    if path.suffix == ".txt":
      found.append(Piece(path, 0, 1))
    elif path.suffix == ".jsonl":
      size = path.stat().length
      found += [
        Piece(path, start, min(start + jsonl_piece_bytes, size))
        for start in range(0, size, jsonl_piece_bytes)
      ]
    else:
      parquet = _parquet_file(path)
      columns = parquet.schema_arrow.names
      if text_field not in columns:
        raise ValueError(
          f"{path} has no column {text_field!r} (data.text_field); columns: {', '.join(columns)}"
        )
      found += [Piece(path, group, group + 1) for group in range(parquet.num_row_groups)]
  return found


def training_piece_bytes(paths: Sequence[epath.Path]) -> int:
  """The size of .jsonl pieces read in training: PIECES_PER_CORPUS of the .jsonl bytes, clamped."""
  total = sum(epath.Path(p).stat().length for p in paths if epath.Path(p).suffix == ".jsonl")
  return int(np.clip(total // PIECES_PER_CORPUS, MIN_PIECE_BYTES, JSONL_PIECE_BYTES))


def _line_number(path: epath.Path, offset: int) -> int:
  with path.open("rb") as f:
    return f.read(offset).count(b"\n") + 1


def _jsonl_documents(piece: Piece, text_field: str, at: int | None) -> Iterator[tuple[int, str]]:
  with piece.path.open("rb") as f:
    if at is None and piece.start > 0:  # the line running into this piece belongs to the previous
      f.seek(piece.start - 1)
      at = piece.start - 1 + len(f.readline())
    at = piece.start if at is None else at
    f.seek(at)
    while at < piece.stop:
      line = f.readline()
      if not line:
        return
      start, at = at, at + len(line)
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
          f"{piece.path}:{_line_number(piece.path, start)} (byte {start}) is not "
          f"valid JSON ({getattr(e, 'msg', e)})"
        ) from None
      if not isinstance(record, dict) or text_field not in record:
        fields = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
        raise DataError(
          f"{piece.path}:{_line_number(piece.path, start)} has no text field "
          f"{text_field!r} (data.text_field); fields: {fields}"
        )
      yield start, record[text_field]


def _parquet_documents(piece: Piece, text_field: str, at: int | None) -> Iterator[tuple[int, str]]:
  try:
    column = _parquet_file(piece.path).read_row_group(piece.start, columns=[text_field]).column(0)
  except Exception as e:  # pyarrow raises several types for damaged files
    raise DataError(
      f"{piece.path}, row group {piece.start}: cannot be read "
      f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    ) from None
  texts = column.to_pylist()
  for row in range(at or 0, len(texts)):
    if texts[row] is not None:
      yield row, texts[row]


def piece_documents(
  piece: Piece, text_field: str, at: int | None = None
) -> Iterator[tuple[int, str]]:
  """(position within the piece, text) of each document of the piece, from position `at` on."""
  if piece.path.suffix == ".txt":
    if not at:
      try:
        yield 0, piece.path.read_text()
      except UnicodeDecodeError as e:
        raise DataError(f"{piece.path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  elif piece.path.suffix == ".jsonl":
    yield from _jsonl_documents(piece, text_field, at)
  else:
    yield from _parquet_documents(piece, text_field, at)


def read_documents(paths: Sequence[epath.Path], text_field: str) -> Iterator[str]:
  """All documents of the files, in the order given."""
  for piece in pieces(paths, text_field):
    for _, text in piece_documents(piece, text_field):
      yield text


class TextFiles:
  """This host's documents of an endless sequence of seeded epochs over the pieces of the files."""

  def __init__(
    self,
    paths: Sequence[epath.Path],
    text_field: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    jsonl_piece_bytes: int | None = None,
  ):
    piece_bytes = jsonl_piece_bytes or training_piece_bytes(paths)
    self._pieces = pieces(paths, text_field, piece_bytes)
    self._text_field = text_field
    self._seed = seed
    self._shuffle = shuffle
    self._process = (process_index, process_count)
    if not self._pieces:
      raise ValueError("every training file of data.files is empty")
    if len(self._pieces) < process_count:
      raise ValueError(
        f"data.files hold {len(self._pieces)} pieces (.txt files, {piece_bytes} "
        f"bytes of .jsonl, .parquet row groups), fewer than the {process_count} hosts "
        "reading them; give more or larger files"
      )

  def host_pieces(self, epoch: int) -> list[Piece]:
    """This host's pieces of an epoch, in reading order."""
    order = (
      np.random.default_rng([self._seed, epoch]).permutation(len(self._pieces))
      if self._shuffle
      else np.arange(len(self._pieces))
    )
    index, count = self._process
    return [self._pieces[i] for i in order[index::count]]

  def _locate(self, cursor: Cursor) -> tuple[int, int, int]:
    """(epoch, piece number in this host's order, position) of a cursor; DataError if it is gone."""
    if len(cursor) != 4 or not isinstance(cursor[1], str):
      raise DataError(
        f"the saved text-file position {cursor} does not name its file "
        "([epoch, file, piece, offset]); resume it with the version that wrote it"
      )
    epoch, path, start, at = cursor
    if path not in {str(piece.path) for piece in self._pieces}:
      raise DataError(
        f"the saved data position is in {path}, which data.files no longer holds; "
        "resume with the files the run started with"
      )
    for number, piece in enumerate(self.host_pieces(epoch)):
      if str(piece.path) == path and (
        piece.start <= at < piece.stop if piece.path.suffix == ".jsonl" else piece.start == start
      ):
        return epoch, number, at
    raise DataError(
      f"the saved data position ({path}, piece {start}, position {at}) is not in "
      f"host {self._process[0]}'s pieces of epoch {epoch}: data.files changed since "
      "the checkpoint; resume with the files the run started with"
    )

  def documents(
    self, cursor: Cursor | None = None, epochs: int | None = None
  ) -> Iterator[tuple[Cursor, str]]:
    """(cursor, text) of this host's documents from `cursor` on (None = the start).

    Each cursor restarts reading at its own document; `epochs` = None repeats forever.
    """
    epoch, first, at = self._locate(cursor) if cursor else (0, 0, None)
    while epochs is None or epoch < epochs:
      has_text = False
      for number, piece in enumerate(self.host_pieces(epoch)):
        if number < first:
          continue
        for position, text in piece_documents(
          piece, self._text_field, at if number == first else None
        ):
          has_text = has_text or bool(text)
          yield [epoch, str(piece.path), piece.start, position], text
      if not has_text and first == 0 and at is None:
        raise DataError(
          f"data.files hold no text for host {self._process[0]} of "
          f"{self._process[1]}: every document of its pieces is empty"
        )
      epoch, first, at = epoch + 1, 0, None
