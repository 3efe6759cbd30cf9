"""Documents from a TensorFlow Datasets text dataset (e.g. `c4/en:3.1.0`), local or in a gs:// bucket.

Host h of H reads the contiguous block h of the split, in the dataset's canonical order, which for
C4 is already shuffled. A position is [epoch, document index in the block]. A dataset prepared in
the ArrayRecord file format (`tfds build --file_format=array_record`) is read by random access
(`tfds.data_source`), so a resume costs the same at any position; other formats are read through
tf.data from the slice starting at that document, which TFDS serves by skipping whole files.
Epochs repeat the block. The canonical order is the one `tfds build` shuffled the examples into,
so no document order of the source survives; runs of one document's windows are mixed after
packing (`example_shuffle`).
"""

from collections.abc import Iterator

from cbs import quiet_tensorflow  # noqa: F401  (before seqio / TFDS, which import it)

# isort: split
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

_READ_BATCH = 256


def builder(name: str, data_dir: str | None):
  """The prepared dataset; raises ValueError naming the dataset if it is not there."""
  try:
    found = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # TFDS raises several types for unknown names and versions
    raise ValueError(
      f"data.tfds_name={name!r} cannot be loaded from "
      f"data.tfds_data_dir={data_dir!r}: {str(e).splitlines()[0]}"
    ) from None
  if not found.is_prepared():
    raise ValueError(
      f"data.tfds_name={name!r} is not prepared in data.tfds_data_dir={data_dir!r} "
      f"(prepare it with 'tfds build' or point the directory at a prepared copy)"
    )
  return found


def host_block(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  return (
    num_examples * process_index // process_count,
    num_examples * (process_index + 1) // process_count,
  )


class TfdsDocuments:
  """This host's texts of one split, as an endless sequence of epochs (or one pass)."""

  def __init__(
    self,
    name: str,
    data_dir: str | None,
    split: str,
    text_field: str,
    process_index: int = 0,
    process_count: int = 1,
  ):
    self._builder = builder(name, data_dir)
    splits = self._builder.info.splits
    if split not in splits:
      raise ValueError(f"split {split!r} is not in {name!r}; splits: {', '.join(sorted(splits))}")
    features = self._builder.info.features
    if text_field not in features:
      raise ValueError(
        f"data.text_field={text_field!r} is not a feature of {name!r}; "
        f"features: {', '.join(sorted(features))}"
      )
    self._split = split
    self._text_field = text_field
    self._lo, self._hi = host_block(splits[split].num_examples, process_index, process_count)
    if self._hi <= self._lo:
      raise ValueError(f"split {split!r} of {name!r} has no example for host {process_index}")
    self.random_access = self._builder.info.file_format == file_adapters.FileFormat.ARRAY_RECORD
    self._records = (
      tfds.data_source(name, split=split, data_dir=data_dir or None) if self.random_access else None
    )

  def documents(
    self, cursor: list[int] | None = None, epochs: int | None = None
  ) -> Iterator[tuple[list[int], str]]:
    """([epoch, index], text) of this host's documents from `cursor` on (None = the start)."""
    epoch, first = cursor if cursor else (0, 0)
    while epochs is None or epoch < epochs:
      for index, text in enumerate(self._texts(first), first):
        yield [epoch, index], text
      epoch, first = epoch + 1, 0

  def _texts(self, first: int) -> Iterator[str]:
    if self.random_access:
      for start in range(self._lo + first, self._hi, _READ_BATCH):
        indices = range(start, min(start + _READ_BATCH, self._hi))
        for record in self._records.__getitems__(list(indices)):
          yield _text(record[self._text_field])
      return
    dataset = self._builder.as_dataset(
      split=f"{self._split}[{self._lo + first}:{self._hi}]", shuffle_files=False
    )
    # Batched reads: tf.data's per-element cost, not the disk, limits an unbatched loop.
    for batch in tfds.as_numpy(dataset.map(lambda x: x[self._text_field]).batch(_READ_BATCH)):
      for text in batch:
        yield _text(text)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
