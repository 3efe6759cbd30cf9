"""TensorBoard event files written without TensorFlow, behind clu's `MetricWriter` interface.

Scalars get grouped tags (`train/loss`, `eval/loss_ewa_0.99`, `batch/size`, `perf/mfu`, ...), so
TensorBoard shows one section per kind. TensorBoard's x-axis can be the step, the relative or the
wall time, never another scalar; runs with growing batches are compared at equal tokens, so
`TokensWriter` keeps a second event stream (`WORKDIR/tokens/`) whose step is the token count.
Locally one event file is appended; on object stores every flush writes a new event file
(`object_store.GrowingFile`), which TensorBoard reads in name order.
"""

import io
import socket
import time
from collections.abc import Mapping
from typing import Any

from cbs import quiet_tensorflow  # noqa: F401  (before clu, which imports TensorFlow)

# isort: split
from clu import metric_writers
from etils import epath
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer import record_writer

from cbs import object_store

TOKENS_RUN = "tokens"
# metrics.jsonl key -> TensorBoard tag; keys not listed go under `other/`.
_SECTIONS = {
  "train": ("loss", "lr", "weight_decay", "grad_norm", "param_norm", "nonfinite", "skipped_steps"),
  "batch": (
    "batch_size",
    "accum_steps",
    "test_groups",
    "grad_noise_scale",
    "norm_test_stat",
    "requested_batch_size",
  ),
  "progress": ("tokens",),
}
_RENAMED = {
  "batch_size": "batch/size",
  "requested_batch_size": "batch/requested_size",
  "tokens_per_sec": "perf/tokens_per_sec",
}
# The curves worth reading against tokens.
_BY_TOKENS = ("loss", "lr", "batch_size", "grad_noise_scale")


def tag(key: str) -> str:
  """The grouped TensorBoard tag of a metrics.jsonl key."""
  if key in _RENAMED:
    return _RENAMED[key]
  if key.startswith("eval_"):
    return "eval/" + key[len("eval_") :]
  if key.startswith("floor_"):
    return "data/" + key
  if key.startswith("perf_"):
    return "perf/" + key[len("perf_") :]
  for section, keys in _SECTIONS.items():
    if key in keys:
      return f"{section}/{key}"
  return "other/" + key


class ScalarsOnlyWriter(metric_writers.MetricWriter):
  """A clu writer of scalars: images, histograms and the other kinds are accepted and dropped."""

  def write_hparams(self, hparams): ...
  def write_summaries(self, step, values, metadata=None): ...
  def write_images(self, step, images): ...
  def write_videos(self, step, videos): ...
  def write_audios(self, step, audios, *, sample_rate): ...
  def write_texts(self, step, texts): ...
  def write_histograms(self, step, arrays, num_buckets=None): ...


class EventWriter(ScalarsOnlyWriter):
  """Scalars and hyper-parameters as TensorBoard events in `logdir`."""

  def __init__(self, logdir: epath.PathLike):
    self._logdir = epath.Path(logdir)
    self._logdir.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
    self._file = object_store.GrowingFile(
      self._logdir / name, lambda n: self._logdir / f"{name}.{n:06d}"
    )
    self._pending: list[bytes] = []
    self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _add(self, event: event_pb2.Event) -> None:
    self._pending.append(event.SerializeToString())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = [
      summary_pb2.Summary.Value(tag=tag(key), simple_value=float(value))
      for key, value in scalars.items()
    ]
    self._add(
      event_pb2.Event(
        wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
      )
    )

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    plain = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    self._add(event_pb2.Event(wall_time=time.time(), summary=hparams_summary.hparams_pb(plain)))

  def flush(self) -> None:
    if not self._pending:
      return
    events = io.BytesIO()
    writer = record_writer.RecordWriter(events)
    for event in self._pending:
      writer.write(event)
    self._file.write(events.getvalue())
    self._pending = []

  def close(self) -> None:
    self.flush()


class TokensWriter(ScalarsOnlyWriter):
  """The main curves (loss, eval losses, learning rate, batch size) with tokens as the step."""

  def __init__(self, logdir: epath.PathLike):
    self._events = EventWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step
    if "tokens" not in scalars:
      return
    kept = {k: v for k, v in scalars.items() if k in _BY_TOKENS or k.startswith("eval_")}
    if kept:
      self._events.write_scalars(int(scalars["tokens"]), kept)

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()
