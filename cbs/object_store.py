"""Object stores (gs://, s3://) as a workdir: how to tell them, and how a growing file is written.

An append to an object rewrites the whole object, so a file that grows by flushes (the metrics
records, TensorBoard's events) is appended to locally and, on an object store, written as one new
numbered part per flush: O(new bytes), never a rewrite. Readers join the parts in name order.
"""

from collections.abc import Callable

from etils import epath


def is_object_store(path: epath.PathLike) -> bool:
  """Whether `path` names an object (a URL such as gs://bucket/run), not a local file."""
  return "://" in str(path)


class GrowingFile:
  """A file written flush by flush: appended to locally, one part per flush on an object store.

  `part(n)` is the path of part n; parts are numbered from `first_part` (the next free one of a
  resumed run).
  """

  def __init__(self, path: epath.PathLike, part: Callable[[int], epath.Path], first_part: int = 0):
    self._path = epath.Path(path)
    self._part = part
    self._next_part = first_part

  @property
  def appends(self) -> bool:
    return not is_object_store(self._path)

  def write(self, data: bytes) -> None:
    """Adds `data` at the end: the local file's, or a new part's."""
    if self.appends:
      with self._path.open("ab") as f:
        f.write(data)
      return
    path = epath.Path(self._part(self._next_part))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    self._next_part += 1
