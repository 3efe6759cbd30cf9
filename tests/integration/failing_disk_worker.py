"""`cbs.main` whose checkpoint writer runs out of disk space (ENOSPC) from a given step on.

    python -m tests.integration.failing_disk_worker STEP [cbs.main flags ...]
        (from the repository root)

The background writer of the progress item fails for the checkpoint of STEP, as a full disk makes it
fail; `disk_full_from` does the same in-process. The loop's check for failed saves is made to see
each save ended at the step after it, so which step the run stops at does not depend on timing.
"""

import errno
import sys
import time

import orbax.checkpoint as ocp
from absl import app
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from cbs import main as cli


def disk_full_from(step: int) -> None:
  write = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def failing_write(self, item, directory):
    step_dir, name = str(directory).rsplit("/", 2)[-2:]
    if name.startswith("progress") and int(step_dir.split(".")[0]) >= step:
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await write(self, item, directory)

  def settled(self) -> bool:  # the save in flight has ended (or failed) by the next step
    while saving(self):
      time.sleep(0.01)
    return False

  saving = ocp.CheckpointManager.is_saving_in_progress
  json_checkpoint_handler.JsonCheckpointHandler._save_fn = failing_write
  ocp.CheckpointManager.is_saving_in_progress = settled


if __name__ == "__main__":
  disk_full_from(int(sys.argv[1]))
  app.run(cli.main, argv=[sys.argv[0], *sys.argv[2:]])
