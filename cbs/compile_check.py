"""Does a config fit a TPU slice? `python -m cbs.compile_check --config=CONFIG --topology=v5e:4x4`.

Compiles the loop's own train step (`compiled_steps.step_compiler`: same mesh, shardings,
FSDP / model axis, scanned layers, remat) for a TPU topology on this host, with no TPU and no
data: libtpu (the `tpu` extra) compiles for compile-only devices, shapes stand in for arrays. Each layout the batch
controller can reach (every size up to `batch.max_size`) is compiled; the JSON printed gives per-chip
bytes against the chip's HBM, the compiled program's FLOPs, bytes accessed and collectives per step
(`cbs.tpu.collectives`, timed on the slice's links by `cbs.tpu.interconnect`), and a range for the step
time: at least the longest of compute, HBM traffic and communication (all overlapped), at most
compute (or HBM) plus communication (none overlapped), with the MFU bounds they give.
`batch.microbatch=auto` is resolved as at run time, from the compiled sizes. Bad input is one line
on stderr with exit code 2.

This module is the command line only: the slices are `cbs.tpu.topology`, the report
`cbs.tpu.fit_check` and each layout's cost `cbs.tpu.step_cost`.
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from cbs.tpu import fit_check
from cbs.tpu import topology

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, GENERATION:SHAPE, e.g. v5e:4x4.")
_SLICES = flags.DEFINE_integer(
  "slices", 1, "Slices joined over the data-center network (multislice)."
)
_DCN = flags.DEFINE_float(
  "dcn_bandwidth",
  topology.DCN_HOST_BANDWIDTH,
  "Data-center network bytes/s per host, shared by its chips (multislice).",
)
flags.mark_flags_as_required(["config", "topology"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax  # noqa: PLC0415

  from cbs.config import validation  # noqa: PLC0415

  jax.config.update("jax_platforms", "cpu")  # this host only traces; a TPU here stays free
  try:
    report = fit_check.check(_CONFIG.value, _TOPOLOGY.value, _SLICES.value, _DCN.value)
  except (topology.UsageError, validation.ConfigError) as e:
    print(f"cbs: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main)
