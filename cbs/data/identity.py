"""The data a run trains and evaluates on, resolved: recorded in every checkpoint, compared on resume.

A config names its data by globs, directories and names; what they resolve to can change under a
run (a file appears, a corpus is re-prepared, a vocabulary is retrained). The identity is the
resolved list of training and held-out files with their sizes (text files), the prepared manifest's
digest (prepared shards), the vocabulary file's digest and the seed that orders the data. A
resume on another identity would read another stream from a saved position, so it is refused unless
asked for. This module reads metadata only: never the data itself.
"""

import hashlib

import ml_collections
from etils import epath

from cbs.data import prepared
from cbs.data import text_files
from cbs.data import vocab as vocab_lib

Identity = dict  # JSON-able: {"source", "train", "held_out", "vocab", "seed"}


def _digest(path: epath.PathLike) -> str:
  return "sha256:" + hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()


def _files(paths) -> list[list]:
  return [[str(p), epath.Path(p).stat().length] for p in paths]


def _text_file_split(d: ml_collections.ConfigDict) -> tuple[list, list]:
  """Training and held-out files: `data.eval_files`, or else the last training file held out."""
  paths = text_files.resolve(d.files)
  if d.eval_files:
    return paths, text_files.resolve(d.eval_files)
  return paths[:-1], paths[-1:]


def of(config: ml_collections.ConfigDict) -> Identity:
  """The identity of the configured data (the config's choices where nothing else is resolved)."""
  d = config.data
  identity = {"source": d.source, "seed": config.seed}
  if d.source == "text_files":
    train, held_out = _text_file_split(d)
    identity.update(train=_files(train), held_out=_files(held_out))
  elif d.source == "prepared":
    identity["manifest"] = _digest(epath.Path(d.prepared_dir) / prepared.MANIFEST)
    identity.update(train=d.train_split, held_out=d.eval_split)
  elif d.source in ("tfds", "seqio"):
    identity.update(
      train=f"{d.tfds_name}:{d.train_split}",
      held_out=d.eval_split,
      task=d.seqio_task if d.source == "seqio" else "",
    )
  else:
    identity["synthetic"] = d.synthetic.to_dict()
  if d.source != "synthetic":
    identity["vocab"] = d.vocab if vocab_lib.kind(d.vocab) == vocab_lib.BYTE else _digest(d.vocab)
  return identity


def _file_changes(name: str, saved: list, current: list) -> str:
  saved_sizes, current_sizes = dict(map(tuple, saved)), dict(map(tuple, current))
  added = [p for p in current_sizes if p not in saved_sizes]
  removed = [p for p in saved_sizes if p not in current_sizes]
  resized = [p for p in current_sizes if p in saved_sizes and current_sizes[p] != saved_sizes[p]]
  parts = (
    [f"+{epath.Path(p).name}" for p in added]
    + [f"-{epath.Path(p).name}" for p in removed]
    + [f"{epath.Path(p).name} {saved_sizes[p]:,} -> {current_sizes[p]:,} bytes" for p in resized]
  )
  shown = ", ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "")
  return f"{name} files {shown}"


def changes(saved: Identity, current: Identity) -> list[str]:
  """What differs between a checkpoint's identity and the current one, each named in a few words."""
  found = []
  for key in sorted(set(saved) | set(current)):
    old, new = saved.get(key), current.get(key)
    if old == new:
      continue
    name = _NAMES.get(key, key)
    if isinstance(old, list) and isinstance(new, list):
      found.append(_file_changes(name, old, new))
    else:
      found.append(f"{name} {_short(old)} -> {_short(new)}")
  return found


_NAMES = {"held_out": "held-out", "manifest": "prepared manifest", "vocab": "vocabulary"}


def _short(value) -> str:
  return value[:19] if isinstance(value, str) and value.startswith("sha256:") else repr(value)
