"""Keeps libtpu (the `tpu` extra) quiet on hosts without TPU chips.

With libtpu installed, JAX tries the TPU backend at start-up on every host, and compiling for a TPU
topology (`cbs.compile_check`) loads libtpu too; without TPU chips libtpu then prints several lines
about TPU hosts it cannot find before JAX falls back to the CPU or GPU. Describing this host as a
one-host slice answers libtpu's questions, so nothing is printed and nothing else changes; and
since there is no TPU to guard, several processes may load libtpu at once (its lock file would
otherwise fail every process but the first, e.g. parallel tests). Hosts with TPU chips, or where
these variables are set already, are left alone.
"""

import importlib.util
import os

_NO_TPU_HOST = {
  "TPU_SKIP_MDS_QUERY": "1",
  "TPU_WORKER_HOSTNAMES": "localhost",
  "TPU_HOST_BOUNDS": "1,1,1",
  "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
}


def quiet_without_tpu() -> None:
  """Sets libtpu's host description where libtpu is installed but the host has no TPU chip."""
  if importlib.util.find_spec("libtpu") is None:
    return
  try:  # JAX's own test for TPU chips on the PCI bus (a private module: absent in other versions)
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top  # noqa: PLC0415

    chips = hardware_utils.num_available_tpu_chips_and_device_id()[0]
  except (ImportError, AttributeError):
    return
  if chips > 0:
    return
  for name, value in _NO_TPU_HOST.items():
    os.environ.setdefault(name, value)
