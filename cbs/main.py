"""Command line: `python -m cbs.main --config=configs/tiny.py --workdir=DIR [--config.KEY=VALUE ...]`.

Any config key can be overridden on the command line. Running the same command again resumes the
run in DIR from its latest checkpoint. A bad config is reported in one line on stderr (exit code 2)
before anything is computed or written.
"""

import logging as py_logging
import os
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow is imported only for its writers

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cbs.config import overrides as config_overrides
from cbs.config import validation
from cbs.parallel import distributed as processes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local path or gs:// URL).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(py_logging.Filter):
  """Keeps orbax's per-save and JAX's backend-probing INFO chatter out of the run log.

  Their warnings and errors still show, without orbax's tracebacks: a failed save is reported
  once, in one line, by the run itself.
  """

  def filter(self, record: py_logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or record.pathname.endswith("xla_bridge.py")
    if "/orbax/" in record.pathname:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= py_logging.WARNING or not noisy


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an unknown config key refused in one line (exit code 2)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, flags.Error) as e:
    unknown = [key for key in config_overrides.flag_keys(argv) if key not in validation.KNOWN_KEYS]
    if unknown:
      print(f"cbs: bad config: {validation.unknown_key(unknown[0])}", file=sys.stderr)
    else:
      print(f"cbs: bad flags: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def _let_writers_end(timeout_s: float = 30.0) -> None:
  """Waits for the checkpoint writer's threads after a failed save, so that what they log as they
  wind down comes before the run's own last line, not after it."""
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join(timeout_s)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  try:
    processes.start(config.mesh)
    validation.validate(config, jax.device_count(), jax.process_count())
    if config.compile_cache_dir:
      jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compile_cache_dir))
    logging.info(
      "JAX process %d of %d, %d local / %d global devices (%s)",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
      jax.devices()[0].platform,
    )
    from cbs import train  # after validation: a bad config fails without loading TensorFlow  # noqa: PLC0415
    from cbs.checkpoint import errors as checkpoint  # noqa: PLC0415
    from cbs.checkpoint import workdir_lock  # noqa: PLC0415
    from cbs.data import stream  # noqa: PLC0415

    try:
      train.train_and_evaluate(config, _WORKDIR.value)
    except checkpoint.WriteFailed as e:
      _let_writers_end()
      print(f"cbs: {e}", file=sys.stderr)
      sys.exit(1)
    except (train.NonFiniteError, checkpoint.CheckpointError) as e:
      print(f"cbs: {e}", file=sys.stderr)
      sys.exit(1)
    except stream.DataError as e:
      print(f"cbs: bad data: {e}", file=sys.stderr)
      sys.exit(2)
    except (checkpoint.HostCountError, workdir_lock.WorkdirBusy) as e:
      print(f"cbs: {e}", file=sys.stderr)
      sys.exit(2)
  except validation.ConfigError as e:
    print(f"cbs: bad config: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
