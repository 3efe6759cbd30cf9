"""Documents from a TensorFlow Datasets text dataset (e.g. `c4/en:3.1.0`), local or in a gs:// bucket.

Host h of H reads the contiguous block h of the split (TFDS slicing by example index), in the
dataset's canonical order, which for C4 is already shuffled. Starting at document k reads the slice
from k on, which TFDS serves by skipping whole files, so a resume does not replay the data. Epochs
repeat the block.
"""

from collections.abc import Iterator

import tensorflow_datasets as tfds

_READ_BATCH = 256


def builder(name: str, data_dir: str | None):
  """The prepared dataset; raises ValueError naming the dataset if it is not there."""
  try:
    found = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # TFDS raises several types for unknown names and versions
    raise ValueError(f"data.tfds_name={name!r} cannot be loaded from "
                     f"data.tfds_data_dir={data_dir!r}: {str(e).splitlines()[0]}") from None
  if not found.is_prepared():
    raise ValueError(f"data.tfds_name={name!r} is not prepared in data.tfds_data_dir={data_dir!r} "
                     f"(prepare it with 'tfds build' or point the directory at a prepared copy)")
  return found


def host_block(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


class TfdsDocuments:
  """This host's texts of one split, as an endless sequence of epochs (or one pass)."""

  def __init__(self, name: str, data_dir: str | None, split: str, text_field: str,
               process_index: int = 0, process_count: int = 1):
    self._builder = builder(name, data_dir)
    splits = self._builder.info.splits
    if split not in splits:
      raise ValueError(f"split {split!r} is not in {name!r}; splits: {', '.join(sorted(splits))}")
    features = self._builder.info.features
    if text_field not in features:
      raise ValueError(f"data.text_field={text_field!r} is not a feature of {name!r}; "
                       f"features: {', '.join(sorted(features))}")
    self._split = split
    self._text_field = text_field
    self._lo, self._hi = host_block(splits[split].num_examples, process_index, process_count)
    if self._hi <= self._lo:
      raise ValueError(f"split {split!r} of {name!r} has no example for host {process_index}")

  def documents(self, start: int = 0, epochs: int | None = None) -> Iterator[str]:
    per_epoch = self._hi - self._lo
    epoch, skip = divmod(start, per_epoch)
    while epochs is None or epoch < epochs:
      dataset = self._builder.as_dataset(split=f"{self._split}[{self._lo + skip}:{self._hi}]",
                                         shuffle_files=False)
      # Batched reads: tf.data's per-element cost, not the disk, limits an unbatched loop.
      for batch in tfds.as_numpy(dataset.map(lambda x: x[self._text_field]).batch(_READ_BATCH)):
        for text in batch:
          yield text.decode("utf-8")
      epoch, skip = epoch + 1, 0
