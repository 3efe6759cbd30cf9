"""Figures of a whole study beyond one sweep: the adaptive schedules' trade-off between steps and
tokens (the answer's CBS against N and D is `analysis.answer_plots`). Legends sit outside the axes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from analysis import plots
from analysis import runs as runs_lib
from cbs.metrics.console import short as _short

DPI = 110


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  plt.close(fig)
  return path


def frontier(runs: list[runs_lib.Run], labels: dict[str, str], metric: str, path: str) -> str:
  """Loss against steps (left) and against tokens (right) for every schedule: the trade-off
  frontier of adaptive batches (fewer steps) against constant small batches (fewer tokens)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for i, r in enumerate(runs):
    key, curve = runs_lib.best_curve(r, metric)
    if not curve:
      continue
    tokens = np.array([e["tokens"] for e in curve], float)
    steps = np.interp(tokens, [t["tokens"] for t in r.train], [t["step"] for t in r.train])
    losses = np.array([e[key] for e in curve], float)
    style = dict(
      color=f"C{i % 10}", ls="-" if r.adaptive else "--", label=labels.get(r.name, r.name)
    )
    axes[0].plot(np.maximum(steps, 1), losses, **style)
    axes[1].plot(tokens, losses, **style)
  axes[0].set_xlabel("optimizer steps", fontsize=11)
  axes[1].set_xlabel("tokens", fontsize=11)
  axes[0].set_ylabel(plots.loss_label(metric), fontsize=11)
  for ax in axes:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _short(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.tick_params(labelsize=10)
  axes[1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
  fig.tight_layout()
  return _save(fig, path)
