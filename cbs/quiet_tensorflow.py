"""Imports TensorFlow without its start-up lines on stderr, and keeps it off the accelerators.

TensorFlow is only a library here (clu's writers, TFDS and seqio import it); its import prints
lines that look like errors on a CPU machine (`failed call to cuInit`, oneDNN and CUDA stub notices)
before its own log level applies. They are written by C++ straight to file descriptor 2, so the
import runs with that descriptor pointed at /dev/null; Python exceptions still propagate. Import
this module before anything that imports TensorFlow.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_discarded():
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def load():
  """The `tensorflow` module, imported quietly once, with no GPU visible to it."""
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with _stderr_discarded():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")  # the accelerators belong to JAX
  return tf


load()
