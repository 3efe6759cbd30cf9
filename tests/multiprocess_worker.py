"""One of two `jax.distributed` CPU processes (4 fake devices each) training the 8-device test run.

It stops after step 2 and resumes in the same process, as a preempted multi-host job would.

    python -m tests.multiprocess_worker PROCESS_ID PORT WORKDIR   (from the repository root)
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402

from cbs import train  # noqa: E402
from tests import test_multiprocess  # noqa: E402


def main(process_id: int, port: str, workdir: str) -> None:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                             process_id=process_id)
  assert jax.process_count() == 2 and jax.device_count() == 8
  # Stopped and resumed: both hosts must take the same restore decision.
  train.train_and_evaluate(test_multiprocess.config(), workdir, stop_after_steps=2)
  progress = train.train_and_evaluate(test_multiprocess.config(), workdir)
  assert (progress["resumed_from"], progress["steps_run"]) == (2, 3), progress


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
