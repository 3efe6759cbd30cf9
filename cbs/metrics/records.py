"""The run's metrics records (`WORKDIR/metrics.jsonl`): where they live, reading and truncating them.

One JSON object per line, `{"step": ..., **scalars}`. Locally one file; on object stores the
writer adds one part per flush (`object_store.GrowingFile`) under `metrics.jsonl.parts/<n>.jsonl`,
and readers join the parts in order. Nothing here imports the
writers' libraries, so the analysis can read runs cheaply.
"""

import json

from etils import epath

from cbs import object_store
from cbs.checkpoint import run_dir

METRICS_FILE = run_dir.METRICS
PARTS_DIR = METRICS_FILE + ".parts"


def parts(workdir: epath.Path) -> list[epath.Path]:
  directory = workdir / PARTS_DIR
  return sorted(directory.glob("*.jsonl"), key=lambda p: int(p.stem)) if directory.exists() else []


def read_records(workdir: epath.PathLike) -> list[dict]:
  """All records of a run, in the order written: the metrics file, then its parts (if any)."""
  workdir = epath.Path(workdir)
  path = workdir / METRICS_FILE
  texts = [path.read_text()] if path.exists() else []
  texts += [part.read_text() for part in parts(workdir)]
  return [json.loads(line) for text in texts for line in text.splitlines() if line.strip()]


def drop_records_after(workdir: epath.PathLike, step: int) -> None:
  """Forgets what steps after a restored checkpoint wrote, so a resumed run adds each step once.

  A fresh run passes its start step - 1: nothing in the file is its own. A shortened local file
  replaces the old one in one rename and an object write is atomic by itself, so a kill midway
  leaves the old or the new records, never a cut-off file.
  """
  workdir = epath.Path(workdir)
  main = workdir / METRICS_FILE
  for path in ([main] if main.exists() else []) + parts(workdir):
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["step"] <= step]
    if len(kept) == len(records):
      continue
    text = "".join(json.dumps(r) + "\n" for r in kept)
    if path != main and not kept:
      path.unlink()
    elif object_store.is_object_store(path):
      path.write_text(text)
    else:
      staged = path.with_name(path.name + ".tmp")
      staged.write_text(text)
      staged.replace(path)


def without_timings(record: dict) -> dict:
  """The record less its wall-clock figures (throughput, `perf_*`): what a rerun reproduces."""
  return {k: v for k, v in record.items() if k != "tokens_per_sec" and not k.startswith("perf_")}
