"""Training and evaluation data: the sources `config.data.source` names, and their checks.

Every source implements `stream.Stream` (exact-once, resumable) and returns a `stream.Data`. The
text sources' modules import grain, TFDS or seqio, so they are imported only when built.
"""

import dataclasses
from collections.abc import Callable

import ml_collections

from cbs.config import registry
from cbs.data import vocab


@dataclasses.dataclass(frozen=True)
class Source:
  """How one data source is built for a host, and what it needs from the config."""

  build: Callable[[ml_collections.ConfigDict, int, int], "object"]  # -> stream.Data
  check: registry.Check
  examples: tuple[registry.Overrides, ...] = ()


def _synthetic(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  from cbs.data import synthetic_stream  # noqa: PLC0415

  return synthetic_stream.make(config, process_index, process_count)


def _text(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  from cbs.data import text_data  # noqa: PLC0415  (grain, TFDS and seqio: only for real text)

  return text_data.make(config, process_index, process_count)


def _check_synthetic(config: ml_collections.ConfigDict) -> None:
  size, data_size = config.model.vocab_size, config.data.synthetic.vocab_size
  registry.require(
    size == -1 or size >= data_size,
    f"model.vocab_size={size} is smaller than the data's vocabulary "
    f"(data.synthetic.vocab_size={data_size})",
  )


def _check_text_files(config: ml_collections.ConfigDict) -> None:
  vocab.VOCABULARIES.check(config)
  from cbs.data import text_files  # noqa: PLC0415

  with registry.as_config_errors():
    text_files.resolve(config.data.files)
    if config.data.eval_files:
      text_files.resolve(config.data.eval_files)


def _check_prepared(config: ml_collections.ConfigDict) -> None:
  registry.require(
    bool(config.data.prepared_dir),
    "data.source='prepared' needs data.prepared_dir (the output of 'python -m cbs.data.prepare')",
  )
  from cbs.data import prepared  # noqa: PLC0415

  with registry.as_config_errors():
    prepared.read_manifest(config.data.prepared_dir)


def _check_tfds(config: ml_collections.ConfigDict) -> None:
  registry.require(bool(config.data.tfds_name), "data.source='tfds' needs data.tfds_name")
  vocab.VOCABULARIES.check(config)


def _check_seqio(config: ml_collections.ConfigDict) -> None:
  registry.require(bool(config.data.seqio_task), "data.source='seqio' needs data.seqio_task")
  if config.data.seqio_task == "cbs_c4":  # the task tokenizes with data.vocab
    vocab.VOCABULARIES.check(config)


SOURCES: registry.Registry[Source] = registry.Registry(
  "data.source",
  {
    "synthetic": Source(_synthetic, _check_synthetic, ({"model.vocab_size": 16},)),
    "text_files": Source(
      _text,
      _check_text_files,
      (
        {"data.source": "text_files", "data.files": ""},
        {"data.source": "text_files", "data.files": "/nonexistent/*.jsonl"},
      ),
    ),
    "prepared": Source(
      _text,
      _check_prepared,
      (
        {"data.source": "prepared"},
        {"data.source": "prepared", "data.prepared_dir": "/nonexistent"},
      ),
    ),
    "tfds": Source(_text, _check_tfds, ({"data.source": "tfds", "data.tfds_name": ""},)),
    "seqio": Source(_text, _check_seqio, ({"data.source": "seqio", "data.seqio_task": ""},)),
  },
  unknown_example="c4",
)


def make(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  """Builds the data of `config.data.source` for this host (a `stream.Data`)."""
  return SOURCES[config.data.source].build(config, process_index, process_count)
