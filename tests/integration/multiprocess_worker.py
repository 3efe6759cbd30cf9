"""One process of a multi-process CPU run through the real command line (4 fake devices each).

    python -m tests.integration.multiprocess_worker PAUSE_AFTER_SAVES SKEWED_HOST \
        --config=... --workdir=... \
        --config.mesh.coordinator=localhost:PORT --config.mesh.num_processes=2 \
        --config.mesh.process_id=I ...                        (from the repository root)

With PAUSE_AFTER_SAVES > 0 the process stops once that many checkpoints are complete, writes
`WORKDIR/paused_<process id>` and sleeps, so a test can SIGKILL the run at a known step. With
SKEWED_HOST >= 0 that host reads one example more than the others at the start, so the hosts' data
positions differ and each must restore its own.
"""

import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

from absl import app
from etils import epath

from cbs import data as data_lib
from cbs import main as cbs_main
from cbs.checkpoint import checkpoints as checkpoint


def _flag(argv: list[str], name: str) -> str:
  return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def pause_after(saves: int, marker: epath.Path) -> None:
  """Makes the `saves`-th checkpoint save wait until it is complete, then hang forever."""
  original = checkpoint.Checkpoints.save
  steps = []

  def save(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)
    steps.append(step)
    if len(steps) == saves:
      self.wait()
      marker.write_text(str(step))
      while True:
        time.sleep(60)

  checkpoint.Checkpoints.save = save


def skew(host: int) -> None:
  """Host `host` skips one example before its first batch (a restored position replaces it)."""
  make = data_lib.make

  def skewed(config, process_index: int, process_count: int):
    data = make(config, process_index, process_count)
    if process_index == host:
      next(data.train._started())  # the stream's own iterator, one example on
    return data

  data_lib.make = skewed


if __name__ == "__main__":
  pause, skewed_host, argv = int(sys.argv[1]), int(sys.argv[2]), [sys.argv[0], *sys.argv[3:]]
  if skewed_host >= 0:
    skew(skewed_host)
  if pause:
    pause_after(
      pause, epath.Path(_flag(argv, "workdir")) / f"paused_{_flag(argv, 'config.mesh.process_id')}"
    )
  app.run(cbs_main.main, argv=argv)
