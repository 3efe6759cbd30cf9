"""The per-step records between two log points, read from the device only at those points.

Each step adds its record (device scalars, not yet read); a log point reads them all at once,
writes one metrics line per step with the interval's speed figures, counts skipped non-finite
steps and prints one progress line. Reading only at log points keeps the device ahead of the host.
"""

from collections.abc import Callable

from cbs import quiet_tensorflow  # noqa: F401  (before clu, which imports TensorFlow)

# isort: split
import jax
from clu import metric_writers

from cbs.metrics import perf
from cbs.metrics import writers as metrics

BadSteps = list[tuple[int, int]]  # (step, tokens) of the non-finite steps read at a log point


class StepLog:
  """Pending step records, the running count of skipped steps, and where they are written."""

  def __init__(
    self,
    writer: metric_writers.MetricWriter,
    progress_log: metrics.ProgressLog,
    skipped_steps: int,
    on_nonfinite: Callable[[int, BadSteps], None] | None = None,
  ):
    """`on_nonfinite(step, bad)`: called when a log point reads non-finite steps (it may raise),
    after their records are written and before the progress line."""
    self._writer, self._progress_log = writer, progress_log
    self._on_nonfinite = on_nonfinite
    self._pending: list[tuple[int, dict]] = []
    self.skipped_steps = skipped_steps

  def add(self, step: int, record: dict) -> None:
    self._pending.append((step, record))

  def write(self, step: int, tokens: int, meter: perf.Meter) -> None:
    """Reads and writes the pending records; the last step's gets the interval's figures."""
    fetched = jax.device_get(self._pending)
    performance = meter.read(tokens)
    tokens_per_sec = performance["tokens_per_sec"]
    for s, record in fetched:
      self.skipped_steps += int(record["nonfinite"])
      figures = performance if s == step else {"tokens_per_sec": tokens_per_sec}
      self._writer.write_scalars(s, {**record, **figures, "skipped_steps": self.skipped_steps})
    self._writer.flush()
    bad = [(s, r["tokens"]) for s, r in fetched if r["nonfinite"]]
    if bad and self._on_nonfinite is not None:
      self._on_nonfinite(step, bad)
    self._progress_log.log(
      step, tokens, float(fetched[-1][1]["loss"]), tokens_per_sec, performance["perf_mfu"]
    )
    self._pending = []
