"""Where metrics go: TensorBoard and `WORKDIR/metrics.jsonl` through clu writers, plus progress lines.

`metrics.jsonl` holds one JSON object per `write_scalars` call, `{"step": ..., **scalars}`: train
records carry `tokens, batch_size, loss, lr, grad_norm, tokens_per_sec`, eval records
`tokens, eval_loss, eval_loss_ewa_<name>`. The analysis reads only this file, so it must never hold
two records for one step and kind: a resumed run first drops what the lost steps wrote. Only host 0
writes.
"""

import json
import math
import time
from collections.abc import Mapping

import tensorflow as tf
from absl import logging
from clu import metric_writers
from etils import epath

# TensorFlow only writes summaries and reads data here; the accelerators belong to JAX.
tf.config.set_visible_devices([], "GPU")

METRICS_FILE = "metrics.jsonl"


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars as JSON lines; appends locally, rewrites the whole file on object stores.

  Only scalars belong in the analysis file; images, histograms and the rest are accepted and left to
  TensorBoard, which receives the same calls.
  """

  def __init__(self, path: epath.PathLike):
    self._path = epath.Path(path)
    self._append = not str(path).startswith(("gs://", "s3://"))
    self._lines = [] if self._append or not self._path.exists() else self._path.read_text().splitlines()
    self._pending: list[str] = []

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    record = {"step": int(step)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    self._pending.append(json.dumps(record))

  def write_summaries(self, step, values, metadata=None): ...
  def write_images(self, step, images): ...
  def write_videos(self, step, videos): ...
  def write_audios(self, step, audios, *, sample_rate): ...
  def write_texts(self, step, texts): ...
  def write_histograms(self, step, arrays, num_buckets=None): ...
  def write_hparams(self, hparams): ...

  def flush(self) -> None:
    if not self._pending:
      return
    if self._append:
      with self._path.open("a") as f:
        f.write("".join(line + "\n" for line in self._pending))
    else:
      self._lines += self._pending
      self._path.write_text("".join(line + "\n" for line in self._lines))
    self._pending = []

  def close(self) -> None:
    self.flush()


def _plain(value) -> float | int:
  value = value.item() if hasattr(value, "item") else value
  return value if isinstance(value, int) else float(value)


def read_records(workdir: epath.PathLike) -> list[dict]:
  """All records of a run's metrics file (empty if there is none yet)."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drop_records_after(workdir: epath.PathLike, step: int) -> None:
  """Forgets what steps after a restored checkpoint wrote, so a resumed run adds each step once.

  A fresh run passes its start step - 1: nothing in the file is its own. The shorter file replaces
  the old one in one rename (an object-store write is atomic by itself), so a kill midway leaves
  one of the two, never a cut-off file.
  """
  path = epath.Path(workdir) / METRICS_FILE
  records = read_records(workdir)
  kept = [r for r in records if r["step"] <= step]
  if len(kept) == len(records):
    return
  text = "".join(json.dumps(r) + "\n" for r in kept)
  if str(path).startswith(("gs://", "s3://")):
    path.write_text(text)
  else:
    staged = path.with_name(METRICS_FILE + ".tmp")
    staged.write_text(text)
    staged.replace(path)


def make_writer(workdir: epath.PathLike, is_main_host: bool) -> metric_writers.MetricWriter:
  """TensorBoard event files in the workdir (asynchronous) and the JSON-lines file."""
  if not is_main_host:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter([
      metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir))),
      JsonlWriter(epath.Path(workdir) / METRICS_FILE),
  ])


class Progress:
  """One log line per logging point: position, loss, speed and the time left, all in tokens."""

  def __init__(self, total_tokens: int, start_tokens: int):
    self._total = total_tokens
    self._start_tokens = start_tokens
    self._start_time = time.monotonic()

  def line(self, step: int, tokens: int, loss: float, tokens_per_sec: float) -> str:
    elapsed = time.monotonic() - self._start_time
    done = tokens - self._start_tokens
    eta = (self._total - tokens) * elapsed / done if done > 0 else math.inf
    return (f"step {step}  tokens {_short(tokens)}/{_short(self._total)} "
            f"({100 * tokens / self._total:.1f}%)  loss {loss:.4f}  "
            f"{_short(tokens_per_sec)} tok/s  ETA {_duration(eta)}")

  def log(self, *args) -> None:
    logging.info(self.line(*args))


def _short(n: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
