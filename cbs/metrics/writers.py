"""Where metrics go: TensorBoard and `WORKDIR/metrics.jsonl` through clu writers, plus progress lines.

`metrics.jsonl` (see `records`) holds one JSON object per `write_scalars` call: train records carry
`tokens, batch_size, loss, lr, grad_norm, tokens_per_sec` and the `perf_*` figures at log points,
eval records `tokens, eval_loss, eval_loss_ewa_<name>`. The analysis reads only these records, so
they must never hold two records for one step and kind: a resumed run first drops what the lost
steps wrote. Only host 0 writes.
"""

import json
import math
import time
from collections.abc import Mapping

from cbs import quiet_tensorflow  # noqa: F401  (before clu, which imports TensorFlow)

# isort: split
from absl import logging
from clu import metric_writers
from etils import epath

from cbs import object_store
from cbs.config import overrides as config_overrides
from cbs.metrics import console as counts
from cbs.metrics import records
from cbs.metrics import tensorboard


class JsonlWriter(tensorboard.ScalarsOnlyWriter):
  """Scalars as JSON lines: appended to one local file, or one new object per flush.

  Only scalars belong in the analysis file; images, histograms and the rest are accepted and left to
  TensorBoard, which receives the same calls.
  """

  def __init__(self, path: epath.PathLike):
    path = epath.Path(path)
    parts = [] if not object_store.is_object_store(path) else records.parts(path.parent)
    self._file = object_store.GrowingFile(
      path,
      lambda n: path.parent / records.PARTS_DIR / f"{n:08d}.jsonl",
      int(parts[-1].stem) + 1 if parts else 0,
    )
    self._pending: list[str] = []

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {"step": int(step)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    self._pending.append(json.dumps(record))

  def flush(self) -> None:
    if not self._pending:
      return
    self._file.write("".join(line + "\n" for line in self._pending).encode())
    self._pending = []

  def close(self) -> None:
    self.flush()


def _plain(value) -> float | int:
  value = value.item() if hasattr(value, "item") else value
  return value if isinstance(value, int) else float(value)


def make_writer(workdir: epath.PathLike, is_main_host: bool) -> metric_writers.MetricWriter:
  """TensorBoard events by step and by tokens (asynchronous) and the JSON-lines records."""
  if not is_main_host:
    return metric_writers.MultiWriter([])
  workdir = epath.Path(workdir)
  return metric_writers.MultiWriter(
    [
      metric_writers.AsyncMultiWriter(
        [
          tensorboard.EventWriter(workdir),
          tensorboard.TokensWriter(workdir / tensorboard.TOKENS_RUN),
        ]
      ),
      JsonlWriter(workdir / records.METRICS_FILE),
    ]
  )


class ProgressLog:
  """One log line per logging point: position, loss, speed and the time left, all in tokens."""

  def __init__(self, total_tokens: int, start_tokens: int):
    self._total = total_tokens
    self._start_tokens = start_tokens
    self._start_time = time.monotonic()

  def line(
    self, step: int, tokens: int, loss: float, tokens_per_sec: float, mfu: float | None = None
  ) -> str:
    elapsed = time.monotonic() - self._start_time
    done = tokens - self._start_tokens
    eta = max(self._total - tokens, 0) * elapsed / done if done > 0 else math.inf
    utilisation = f"  MFU {100 * mfu:.1f}%" if mfu is not None else ""
    # the last step of a run may pass train_tokens (steps are whole batches): the run is complete
    return (
      f"step {step}  tokens {counts.short(tokens)}/{counts.short(self._total)} "
      f"({100 * min(tokens / self._total, 1):.1f}%)  loss {loss:.4f}  "
      f"{counts.short(tokens_per_sec)} tok/s{utilisation}  ETA {_duration(eta)}"
    )

  def log(self, *args) -> None:
    logging.info(self.line(*args))


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def floor_gaps(losses: Mapping[str, float], floors: Mapping[str, float]) -> str:
  """How far the best eval loss is above each known loss floor, for the console."""
  if not floors or not losses:
    return ""
  best = min(losses.values())
  return (
    "  (best "
    + ", ".join(f"{best - value:+.4f} over {name}" for name, value in floors.items())
    + ")"
  )


def hyperparameters(config) -> dict[str, bool | int | float | str]:
  """The config values that differ from the defaults: what a config file, a sweep or a user chose.

  They go to TensorBoard's HParams dashboard, where runs are filtered and compared by them.
  """
  return {
    k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
    for k, v in config_overrides.changed(config.to_dict()).items()
  }
