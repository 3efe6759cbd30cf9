"""`cbs.main` that sends itself a signal at a given step, so preemption tests do not race the loop.

    python -m tests.integration.signal_worker SIGNAL STEP [cbs.main flags ...]
        (from the repository root)

The signal goes out from the loop's per-step preemption check at STEP. Before a SIGKILL the
checkpoint writes in flight are awaited, so which checkpoint the killed run left is known.
"""

import os
import signal
import sys

from absl import app

from cbs import main as cli
from cbs.checkpoint import checkpoints as checkpoint


def signal_at(signum: int, at_step: int) -> None:
  reached = checkpoint.Checkpoints.reached_preemption

  def hook(self, step: int) -> bool:
    if step == at_step:
      if signum == signal.SIGKILL:
        self.wait()
      os.kill(os.getpid(), signum)
    return reached(self, step)

  checkpoint.Checkpoints.reached_preemption = hook


if __name__ == "__main__":
  signal_at(signal.Signals[sys.argv[1]], int(sys.argv[2]))
  app.run(cli.main, argv=[sys.argv[0], *sys.argv[3:]])
