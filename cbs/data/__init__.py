"""Training and evaluation data: picks the source named by `config.data.source`.

Every source implements `stream.Stream` (exact-once, resumable) and returns a `stream.Data`.
"""

import ml_collections

from cbs.data import stream
from cbs.data import synthetic_stream

SOURCES = ("synthetic", "text_files", "prepared", "tfds", "seqio")


def make(config: ml_collections.ConfigDict, process_index: int, process_count: int) -> stream.Data:
  """Builds the data of `config.data.source` for this host."""
  if config.data.source == "synthetic":
    return synthetic_stream.make(config, process_index, process_count)
  if config.data.source in SOURCES:
    from cbs.data import text_data  # imports grain, TFDS and seqio: only for real text
    return text_data.make(config, process_index, process_count)
  raise ValueError(f"data.source={config.data.source!r} is not one of {', '.join(SOURCES)}")
