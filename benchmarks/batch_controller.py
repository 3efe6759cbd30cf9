"""Cost of changing the batch size: stall at a switch, and the overhead of the test statistics.

    python benchmarks/batch_controller.py

prints JSON measured on `configs/tiny.py` in one process:
- `stall_steps_precompiled` / `stall_steps_without`: the time training waited at a 32 -> 64 switch,
  in steady steps of the new size, with the next layout compiled ahead in a background thread and
  without (goal: <= 2 with it);
- `statistics_overhead_interval_N`: steady step time with the norm test's statistics, tested every
  N steps (each test reads two scalars back to the host), over the same layout without them,
  minus 1 (goal: <= 0.03).
"""

import json
import tempfile

import numpy as np
from absl import app
from absl import logging

from cbs import records
from cbs import train
from configs import tiny

SEQ_LEN = 64


def run(steps: int, **batch) -> tuple[list[dict], dict]:
  config = tiny.get_config()
  config.compile_cache_dir = ""
  config.train_tokens = steps * config.batch.size * SEQ_LEN
  config.eval.every_tokens = config.checkpoint.every_tokens = 0
  config.log.every_steps = 1
  config.batch.update(batch)
  config.train_tokens = steps * config.batch.size * SEQ_LEN
  with tempfile.TemporaryDirectory() as workdir:
    progress = train.train_and_evaluate(config, workdir)
    return [r for r in records.read_records(workdir) if "loss" in r], progress


def steady_step_seconds(records: list[dict], size: int) -> float:
  """Median seconds per step at `size`, skipping each size's first two steps (compile, warm-up)."""
  times = [size * SEQ_LEN / r["tokens_per_sec"] for r in records if r["batch_size"] == size]
  return float(np.median(times[2:]))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  result = {}
  for precompile in (True, False):
    # 60 steps at 32 leave the background compile of 64 time to finish before the switch.
    records, progress = run(90, size=32, max_size=64, schedule="ramp", precompile=precompile,
                            ramp=((0, 32), (60 * 32 * SEQ_LEN, 64)))
    switch = progress["batch"]["history"][0]
    key = "stall_steps_precompiled" if precompile else "stall_steps_without"
    result[key] = round(switch["stall_seconds"] / steady_step_seconds(records, 64), 2)
    result[key.replace("steps", "seconds")] = switch["stall_seconds"]
  plain, _ = run(150, size=64, microbatch=32)
  result["step_seconds_without_statistics"] = steady_step_seconds(plain, 64)
  for interval in (1, 10):  # a test reads two scalars back to the host: every step, or every 10th
    tested, _ = run(150, size=64, microbatch=32, max_size=1 << 20, schedule="norm", eta=1e6,
                    test_interval=interval)
    seconds = steady_step_seconds(tested, 64)
    result[f"step_seconds_with_statistics_interval_{interval}"] = seconds
    result[f"statistics_overhead_interval_{interval}"] = round(
        seconds / result["step_seconds_without_statistics"] - 1, 4)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
