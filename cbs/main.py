"""Command line: `python -m cbs.main --config=configs/tiny.py --workdir=DIR [--config.KEY=VALUE ...]`.

Any config key can be overridden on the command line. Running the same command again resumes the
run in DIR from its latest checkpoint.
"""

import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cbs import train
from cbs import validation

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local path or gs:// URL).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  if config.mesh.distributed:
    jax.distributed.initialize()  # finds the coordinator on TPU pods, Slurm and GKE by itself
  if config.compile_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compile_cache_dir))
  try:
    validation.validate(config, jax.device_count(), jax.process_count())
  except validation.ConfigError as e:
    print(f"cbs: bad config: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("JAX process %d of %d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
