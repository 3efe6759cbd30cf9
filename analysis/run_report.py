"""A report of any run directories, without a sweep manifest: `analysis.cbs report --runs=A,B`.

For one run or a handful (a growing-batch run beside a constant one, a run someone left going), it
tabulates how far each got and plots the curves that matter when batches differ or change: eval
loss against tokens and against steps, the batch size with the online gradient-noise scale, and
the measured throughput.
"""

import math
import os

import numpy as np
from matplotlib import pyplot as plt

from analysis import report as report_lib
from analysis import runs as runs_lib
from cbs.checkpoint import run_dir


def load(run_dirs: list[str]) -> list[runs_lib.Run]:
  """The runs; raises ValueError naming a directory that holds no run."""
  runs = []
  for workdir in run_dirs:
    if not run_dir.has_run(workdir):
      raise ValueError(f"--runs entry {workdir!r} holds no run (no {run_dir.RUN_INFO})")
    runs.append(runs_lib.load_run(workdir, name=os.path.basename(os.path.normpath(workdir))))
  return runs


def _median(values) -> float:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return float(np.median(values)) if values else math.nan


def summary(run: runs_lib.Run, metric: str) -> dict:
  """One table row: progress, losses, batch sizes and throughput of a run."""
  last = run.train[-1] if run.train else {}
  key, evals = runs_lib.best_curve(run, metric) if run.evals else ("", [])
  return {
    "run": run.name,
    "steps": last.get("step", 0),
    "tokens": last.get("tokens", 0),
    "finished": run.finished,
    "train loss": last.get("loss", math.nan),
    "best eval loss": min((r[key] for r in evals), default=math.nan),
    "eval": key,
    "batch (first -> last)": (
      f"{run.train[0]['batch_size']} -> {last['batch_size']}" if run.train else ""
    ),
    "tokens/s (median)": _median(r.get("tokens_per_sec") for r in run.train),
    "MFU (median)": _median(r.get("perf_mfu") for r in run.train),
  }


def overview(runs: list[runs_lib.Run], metric: str, path: str) -> str:
  """Eval loss vs tokens and steps, batch size and noise scale vs tokens, throughput vs tokens."""
  fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
  for i, r in enumerate(runs):
    color = f"C{i}"
    if r.evals:
      key, evals = runs_lib.best_curve(r, metric)
      axes[0, 0].plot(
        [x["tokens"] for x in evals],
        [x[key] for x in evals],
        "o-",
        ms=3,
        color=color,
        label=f"{r.name} ({key})",
      )
      axes[0, 1].plot([x["step"] for x in evals], [x[key] for x in evals], "o-", ms=3, color=color)
    axes[1, 0].step(
      [x["tokens"] for x in r.train],
      [x["batch_size"] for x in r.train],
      where="post",
      color=color,
      label=f"{r.name}: batch size",
    )
    noise = [
      (x["tokens"], x["grad_noise_scale"])
      for x in r.train
      if x.get("grad_noise_scale", 0) > 0 and math.isfinite(x["grad_noise_scale"])
    ]
    if noise:
      axes[1, 0].plot(
        *zip(*noise), ".", color=color, ms=3, alpha=0.5, label=f"{r.name}: noise scale B_simple"
      )
    speed = [(x["tokens"], x["tokens_per_sec"]) for x in r.train if "tokens_per_sec" in x]
    if speed:
      axes[1, 1].plot(*zip(*speed), color=color)
  axes[0, 0].set(xlabel="tokens", ylabel="eval loss", xscale="log", title="loss vs tokens")
  axes[0, 1].set(xlabel="steps", ylabel="eval loss", xscale="log", title="loss vs steps")
  axes[1, 0].set(
    xlabel="tokens", ylabel="sequences", yscale="log", title="batch size and gradient noise scale"
  )
  axes[1, 1].set(
    xlabel="tokens", ylabel="tokens / s", title="throughput (compiles and evals excluded)"
  )
  fig.legend(
    *axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncols=3, fontsize=8
  )
  axes[1, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncols=2)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def build(run_dirs: list[str], out: str, metric: str, command: str) -> tuple[list, dict]:
  runs = load(run_dirs)
  os.makedirs(out, exist_ok=True)
  rows = [summary(r, metric) for r in runs]
  blocks = [
    report_lib.heading("Run report", 1),
    report_lib.code(command),
    report_lib.table(list(rows[0]), [list(row.values()) for row in rows]),
    report_lib.image(
      overview(runs, metric, os.path.join(out, "runs.png")),
      "Eval loss by tokens and by steps, batch size with the online noise scale, and throughput",
    ),
  ]
  return blocks, {"command": command, "runs": rows}
