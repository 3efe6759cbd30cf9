"""Tokenizes text files once into ArrayRecord shards that training reads by random access.

    python -m cbs.data.prepare --files='corpus/*.jsonl' --vocab=/tmp/spm.model --output=DIR

reads `.txt` / `.jsonl` / `.parquet` files (see `text_files`), joins the token ids of every document
followed by EOS into one stream per split and writes it in records of `--record_tokens` tokens to
`DIR/<split>-NNNNN.array_record`, then `DIR/manifest.json` (vocabulary, token and document counts,
shards, the command). The manifest is written last, so an interrupted run leaves no usable
directory. Train with `--config.data.source=prepared --config.data.prepared_dir=DIR`.
Pieces of the files are tokenized in parallel worker processes and written in file order.
"""

import concurrent.futures
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tqdm
from absl import app
from absl import flags
from etils import epath

from cbs import object_store
from cbs.data import prepared
from cbs.data import text_files
from cbs.data import vocab as vocab_lib

_worker_vocab = None


def _init_worker(vocab_spec: str) -> None:
  global _worker_vocab
  _worker_vocab = vocab_lib.make(vocab_spec)


def _tokenize_piece(piece: text_files.Piece, text_field: str) -> tuple[np.ndarray, int]:
  """The EOS-joined tokens of one piece and its number of documents."""
  texts = [text for _, text in text_files.piece_documents(piece, text_field)]
  ids = vocab_lib.encode_batch(texts, _worker_vocab) if texts else []
  eos = np.array([_worker_vocab.eos_id], np.int32)
  joined = (
    np.concatenate([part for doc in ids for part in (doc, eos)]) if ids else np.zeros(0, np.int32)
  )
  return joined, len(texts)


class _ShardWriter:
  """Cuts a token stream into fixed-size records and shard files of one split."""

  def __init__(
    self, local_dir: str, split: str, record_tokens: int, shard_tokens: int, dtype: np.dtype
  ):
    self._dir, self._split, self._dtype = local_dir, split, dtype
    self._record_tokens = record_tokens
    self._records_per_shard = max(shard_tokens // record_tokens, 1)
    self._buffer = np.zeros(0, np.int32)
    self._writer = None
    self._records_in_shard = 0
    self.shards: list[str] = []
    self.first_records: list[str] = []  # each shard's first record's digest (swaps show)
    self.tokens = 0

  def write(self, tokens: np.ndarray) -> None:
    self.tokens += len(tokens)
    self._buffer = np.concatenate([self._buffer, tokens])
    full = len(self._buffer) // self._record_tokens * self._record_tokens
    for start in range(0, full, self._record_tokens):
      self._write_record(self._buffer[start : start + self._record_tokens])
    self._buffer = self._buffer[full:]

  def _write_record(self, record: np.ndarray) -> None:
    from array_record.python import array_record_module  # the writer ships with grain's reader  # noqa: PLC0415

    if self._writer is None or self._records_in_shard == self._records_per_shard:
      self._close_shard()
      name = f"{self._split}-{len(self.shards):05d}.array_record"
      self._writer = array_record_module.ArrayRecordWriter(
        os.path.join(self._dir, name), "group_size:1"
      )
      self.shards.append(name)
      self.first_records.append(prepared.record_digest(record.astype(self._dtype).tobytes()))
    self._writer.write(record.astype(self._dtype).tobytes())
    self._records_in_shard += 1

  def _close_shard(self) -> None:
    if self._writer is not None:
      self._writer.close()
    self._writer, self._records_in_shard = None, 0

  def close(self) -> None:
    if len(self._buffer):
      self._write_record(self._buffer)
    self._close_shard()


def _tokenized(
  pieces: Sequence[text_files.Piece],
  text_field: str,
  vocab_spec: str,
  workers: int,
  progress: tqdm.tqdm,
) -> Iterator[tuple[np.ndarray, int]]:
  """Tokens of each piece, in order, computed `workers` pieces at a time (1: in this process)."""
  if workers == 1:
    _init_worker(vocab_spec)
    for piece in pieces:
      yield _tokenize_piece(piece, text_field)
      progress.update()
    return
  # Fresh interpreters, not forks: a fork of a process with threads (TensorFlow's) can deadlock.
  with concurrent.futures.ProcessPoolExecutor(
    workers,
    initializer=_init_worker,
    initargs=(vocab_spec,),
    mp_context=multiprocessing.get_context("spawn"),
  ) as pool:
    window = []
    for piece in pieces:
      window.append(pool.submit(_tokenize_piece, piece, text_field))
      if len(window) > 2 * workers:
        yield window.pop(0).result()
        progress.update()
    for future in window:
      yield future.result()
      progress.update()


def prepare(
  files: Sequence[str],
  vocab_spec: str,
  output: str,
  eval_files: Sequence[str] = (),
  text_field: str = "text",
  record_tokens: int = 4096,
  shard_tokens: int = 1 << 28,
  workers: int = 0,
  command: str = "",
) -> dict:
  """Writes the shards and the manifest; returns the manifest."""
  vocabulary = vocab_lib.make(vocab_spec)
  train_paths, eval_paths = _split_paths(files, eval_files)
  dtype = np.dtype(np.uint16 if vocabulary.vocab_size <= 1 << 16 else np.uint32)
  workers = workers or os.cpu_count() or 1
  out = epath.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  staged = object_store.is_object_store(output)
  local = tempfile.mkdtemp(prefix="cbs_prepare_") if staged else output
  shards = _ShardSpec(local, record_tokens, shard_tokens, dtype)
  splits = {
    split: _write_split(split, paths, shards, text_field, vocab_spec, workers)
    for split, paths in (("train", train_paths), ("validation", eval_paths))
  }
  if local != output:
    _upload(local, out, splits)
  manifest = {
    "vocab": vocab_spec,
    "vocab_size": vocabulary.vocab_size,
    "eos_id": int(vocabulary.eos_id),
    "dtype": dtype.name,
    "record_tokens": record_tokens,
    "text_field": text_field,
    "splits": splits,
    "command": command,
  }
  staging = out / (prepared.MANIFEST + ".tmp")
  staging.write_text(json.dumps(manifest, indent=2))
  staging.rename(out / prepared.MANIFEST)  # last: an interrupted run leaves no usable directory
  return manifest


class _ShardSpec(NamedTuple):
  """Where and how each split's shards are written."""

  local_dir: str  # the output, or a local staging directory for an object store
  record_tokens: int
  shard_tokens: int
  dtype: np.dtype


def _split_paths(
  files: Sequence[str], eval_files: Sequence[str]
) -> tuple[list[epath.Path], list[epath.Path]]:
  """The training and held-out files: `eval_files`, or else the last of several `files`."""
  train_paths = text_files.resolve(files)
  if eval_files:
    return train_paths, text_files.resolve(eval_files)
  if len(train_paths) >= 2:
    return train_paths[:-1], train_paths[-1:]
  raise ValueError(
    f"--files={','.join(files)} is a single file; give --eval_files, or several "
    "files (the last one is then held out)"
  )


def _write_split(
  split: str,
  paths: Sequence[epath.Path],
  shards: _ShardSpec,
  text_field: str,
  vocab_spec: str,
  workers: int,
) -> dict:
  """One split tokenized into its shards; its manifest entry."""
  pieces = text_files.pieces(paths, text_field)
  writer = _ShardWriter(
    shards.local_dir, split, shards.record_tokens, shards.shard_tokens, shards.dtype
  )
  documents = 0
  with tqdm.tqdm(total=len(pieces), desc=f"{split}: pieces", unit="piece", file=sys.stderr) as bar:
    for tokens, count in _tokenized(pieces, text_field, vocab_spec, workers, bar):
      writer.write(tokens)
      documents += count
      bar.set_postfix(tokens=f"{writer.tokens:,}", documents=f"{documents:,}")
  writer.close()
  if not writer.tokens:
    raise ValueError(f"the {split} files ({', '.join(map(str, paths))}) hold no text")
  return {
    "tokens": writer.tokens,
    "documents": documents,
    "shards": writer.shards,
    "first_records": writer.first_records,
    "files": [str(p) for p in paths],
  }


def _upload(local: str, out: epath.Path, splits: dict) -> None:
  """Copies the shards staged in `local` to the object store, then removes them."""
  for split in splits.values():
    for shard in split["shards"]:
      (out / shard).write_bytes(epath.Path(local, shard).read_bytes())
  shutil.rmtree(local)


def _define_flags() -> dict:
  """The command's flags, defined only when it runs (the library functions need none)."""
  return {
    "files": flags.DEFINE_list(
      "files", None, "Training text: globs or paths (.txt, .jsonl, .parquet)."
    ),
    "eval_files": flags.DEFINE_list(
      "eval_files", [], "Held-out files; empty = the last of --files."
    ),
    "vocab_spec": flags.DEFINE_string(
      "vocab", None, "byte, a SentencePiece model or a tokenizer.json."
    ),
    "output": flags.DEFINE_string("output", None, "Directory to write (local or gs://)."),
    "text_field": flags.DEFINE_string("text_field", "text", "Field / column holding the text."),
    "record_tokens": flags.DEFINE_integer("record_tokens", 4096, "Tokens per ArrayRecord record."),
    "shard_tokens": flags.DEFINE_integer("shard_tokens", 1 << 28, "Tokens per shard file."),
    "workers": flags.DEFINE_integer("workers", 0, "Tokenizing processes; 0 = one per CPU core."),
  }


def main(argv: list[str], flag_values: dict) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  values = {name: flag.value for name, flag in flag_values.items()}
  for name, flag in (("files", "files"), ("vocab_spec", "vocab"), ("output", "output")):
    if not values[name]:
      print(f"cbs.data.prepare: --{flag} is required", file=sys.stderr)
      sys.exit(2)
  try:
    manifest = prepare(**values, command=" ".join(["python -m cbs.data.prepare", *sys.argv[1:]]))
  except ValueError as e:  # bad files, vocabularies and data: the user's to fix
    print(f"cbs.data.prepare: {e}", file=sys.stderr)
    sys.exit(2)
  for split, info in manifest["splits"].items():
    print(
      f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, "
      f"{len(info['shards'])} shards"
    )
  print(
    f"wrote {values['output']}; train with --config.data.source=prepared "
    f"--config.data.prepared_dir={values['output']}"
  )


if __name__ == "__main__":
  _flag_values = _define_flags()
  app.run(lambda argv: main(argv, _flag_values))
