"""Documents from a seqio task or mixture, and the project's C4 task.

The `cbs_c4` task is the T5-style span of raw C4 text - the `text` field tokenized with the
configured vocabulary, no corruption objective and no EOS (packing adds it). Other tasks are whatever
the module named by `data.seqio_module` registers. Each host reads its seqio shard; a resume skips
the documents already consumed, which tf.data does without tokenizing them only if the task's
preprocessing is cheap - prefer the `tfds` source for very long runs. Documents come in the task's
own order (shuffle=False, as a resumable position needs); packed examples are mixed after packing
(`example_shuffle`).
"""

import functools
import importlib
from collections.abc import Iterator

from cbs import quiet_tensorflow  # noqa: F401  (before seqio / TFDS, which import it)

# isort: split
import numpy as np
import seqio

from cbs.data import vocab as vocab_lib

C4_TASK = "cbs_c4"
_READ_BATCH = 256


def register_c4(
  vocab_spec: str,
  tfds_name: str = "c4/en:3.1.0",
  data_dir: str | None = None,
  splits: tuple[str, ...] = ("train", "validation"),
) -> str:
  """Registers (or re-registers) `cbs_c4` over `tfds_name` with this vocabulary; returns the name."""
  vocabulary = vocab_lib.make(vocab_spec)
  seqio.TaskRegistry.remove(C4_TASK)
  seqio.TaskRegistry.add(
    C4_TASK,
    source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir or None, splits=splits),
    preprocessors=[
      functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
      seqio.preprocessors.tokenize,
    ],
    output_features={"targets": seqio.Feature(vocabulary=vocabulary, add_eos=False)},
  )
  return C4_TASK


def task(name: str, module: str = ""):
  """The registered task or mixture, after importing the module that registers it."""
  if module:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f"data.seqio_module={module!r} cannot be imported ({e})") from None
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    raise ValueError(
      f"data.seqio_task={name!r} is not a registered seqio task or mixture"
    ) from None


class SeqioDocuments:
  """This host's tokenized documents of one split of a task, endlessly repeated or one pass."""

  def __init__(self, task_or_mixture, split: str, process_index: int = 0, process_count: int = 1):
    if split not in task_or_mixture.splits:
      raise ValueError(
        f"split {split!r} is not in seqio task {task_or_mixture.name!r}; "
        f"splits: {', '.join(task_or_mixture.splits)}"
      )
    self._task = task_or_mixture
    self._split = split
    self._shard = seqio.ShardInfo(index=process_index, num_shards=process_count)

  @property
  def vocabulary(self):
    return self._task.output_features["targets"].vocabulary

  def documents(
    self, cursor: list[int] | None = None, epochs: int | None = None
  ) -> Iterator[tuple[list[int], np.ndarray]]:
    """([index], token ids) of this host's documents from `cursor` on (None = the start)."""
    start = cursor[0] if cursor else 0
    dataset = self._task.get_dataset(
      sequence_length=None,
      split=self._split,
      shuffle=False,
      shard_info=self._shard,
      num_epochs=epochs,
      trim_output_features=False,
    )
    batches = dataset.skip(start).map(lambda x: x["targets"]).ragged_batch(_READ_BATCH)
    index = start
    for batch in batches.as_numpy_iterator():  # batched: tf.data's per-element cost dominates
      for ids in batch:
        yield [index], np.asarray(ids, np.int32)
        index += 1
