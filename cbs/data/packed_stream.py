"""A `Stream` of packed examples from any tokenized document source, prefetched in a background thread.

The position is (examples consumed, document, token offset): restoring it restarts the document
source at that document - no tokenization of what came before - so a resumed run continues with
exactly the example an uninterrupted run would have read next. The prefetch thread runs ahead by at
most `prefetch` examples; only examples handed to the training loop move the saved position.
"""

from collections.abc import Callable, Iterator
import queue
import threading

import numpy as np

from cbs.data import packing
from cbs.data import stream as stream_lib

Documents = Callable[[int], Iterator[np.ndarray]]  # start document -> this host's token documents
_END = object()


class PackedStream:
  """Exact-once stream of this host's packed examples."""

  def __init__(self, documents: Documents, seq_len: int, eos_id: int, process_index: int,
               process_count: int, prefetch: int = 256):
    self._documents = documents
    self._seq_len = seq_len
    self._eos_id = eos_id
    self._process = (process_index, process_count)
    self._prefetch = max(prefetch, 1)
    self._state = {"examples": 0, "document": 0, "offset": 0}
    self._thread = None

  # ---- Stream interface ---------------------------------------------------------------------------
  def next_batch(self, global_batch: int) -> stream_lib.Batch:
    rows = stream_lib.host_rows(global_batch, *self._process)
    if self._thread is None:
      self._start()
    items = [self._take() for _ in range(rows.stop - rows.start)]
    self._state = {"examples": self._state["examples"] + len(items), **items[-1][2]}
    return packing.to_batch([(tokens, length) for tokens, length, _ in items])

  def get_state(self) -> dict:
    return dict(self._state)

  def set_state(self, state: dict) -> None:
    self._stop()
    self._state = {key: int(state[key]) for key in ("examples", "document", "offset")}

  # ---- prefetching --------------------------------------------------------------------------------
  def _start(self) -> None:
    self._queue = queue.Queue(maxsize=self._prefetch)
    self._halt = threading.Event()
    self._thread = threading.Thread(target=self._produce, daemon=True, name="cbs-data-prefetch")
    self._thread.start()

  def _produce(self) -> None:
    start, offset = self._state["document"], self._state["offset"]
    try:
      for item in packing.pack(self._documents(start), self._seq_len, self._eos_id, start, offset):
        if not self._put(item):
          return
      self._put(_END)
    except Exception as e:  # handed to the training thread, which raises it
      self._put(e)

  def _put(self, item) -> bool:
    while not self._halt.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _take(self):
    item = self._queue.get()
    if item is _END:
      raise ValueError("the training data ran out; the source should repeat (epochs)")
    if isinstance(item, Exception):
      raise item
    return item

  def _stop(self) -> None:
    if self._thread is not None:
      self._halt.set()
      self._thread.join()
      self._thread = None


def eval_batches(documents: Iterator[np.ndarray], seq_len: int, eos_id: int, num_examples: int,
                 eval_batch: int, process_index: int, process_count: int) -> list[stream_lib.Batch]:
  """The first `num_examples` packed examples of the held-out documents, as this host's rows.

  Every host packs the same held-out documents and keeps its rows, so the set is identical for every
  run of a sweep. A source shorter than requested gives fewer examples; the last batch is filled with
  fully masked rows.
  """
  examples = []
  for tokens, length, _ in packing.pack(documents, seq_len, eos_id):
    examples.append((tokens, length))
    if len(examples) == num_examples:
      break
  if not examples:
    raise ValueError("the held-out data is empty")
  while len(examples) % eval_batch:
    examples.append((np.zeros(seq_len + 1, np.int32), 0))
  rows = stream_lib.host_rows(eval_batch, process_index, process_count)
  return [packing.to_batch(examples[start:start + eval_batch][rows])
          for start in range(0, len(examples), eval_batch)]
