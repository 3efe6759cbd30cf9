"""Figures of the adaptive study: the steps / tokens frontier of the tuned arms (one line per seed)
and their batch sizes over training. Line style says the kind: constant dashed, ramp dash-dotted,
adaptive solid; a colour per arm."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from analysis import plots
from analysis import runs as runs_lib
from cbs.metrics.console import short

DPI = 110
STYLES = {"constant": "--", "ramp": "-.", "adaptive": "-"}


def _log_x(ax, label: str) -> None:
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: short(v)))
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel(label, fontsize=11)
  ax.grid(alpha=0.3, which="both")
  ax.tick_params(labelsize=10)


def frontier(arms: list, targets: list[float], path: str) -> str:
  """Eval loss against steps (left) and tokens (right), the target losses dotted; `arms` are
  `adaptive_measure.Tuned`."""
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
  for target in targets:
    axes[0].axhline(target, color="0.5", ls=":", lw=0.8)
  for i, arm in enumerate(arms):
    for k, run in enumerate(arm.runs):
      if not run.evals:
        continue
      key, curve = runs_lib.best_curve(run, "best")
      tokens = np.array([e["tokens"] for e in curve], float)
      steps = np.array([e["step"] for e in curve], float)
      losses = np.array([e[key] for e in curve], float)
      style = {
        "color": f"C{i % 10}",
        "ls": STYLES[arm.kind],
        "lw": 1.4 if k == 0 else 0.8,
        "label": f"{arm.label} (lr {arm.lr:.3g})" if k == 0 else None,
      }
      axes[0].plot(np.maximum(steps, 1), losses, **style)
      axes[1].plot(tokens, losses, **style)
  _log_x(axes[0], "optimizer steps")
  _log_x(axes[1], "tokens")
  axes[0].set_ylabel(plots.loss_label("best"), fontsize=11)
  axes[1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
  fig.tight_layout()
  return plots.save(fig, path, DPI, tight=True)


def batch_sizes(arms: list, path: str) -> str:
  """Batch size against tokens of each arm's first seed."""
  fig, ax = plt.subplots(figsize=(8, 4.2))
  for i, arm in enumerate(arms):
    run = arm.runs[0]
    ax.step(
      [r["tokens"] for r in run.train],
      [r["batch_size"] for r in run.train],
      where="post",
      color=f"C{i % 10}",
      ls=STYLES[arm.kind],
      label=arm.label,
    )
  _log_x(ax, "tokens")
  ax.set_yscale("log", base=2)
  ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.set_ylabel("batch size (sequences)", fontsize=11)
  ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
  fig.tight_layout()
  return plots.save(fig, path, DPI, tight=True)
