"""The answer's figure: the CBS against N at each D and against D at each N (the two views of
Zhang et al. 2024), with the joint law c N^alpha D^beta dashed. Legends sit outside the axes."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from analysis import plots
from cbs.metrics.console import short as _short

DPI = 110


def _style(ax, x_label: str) -> None:
  """Log axes with short tick labels, the labels, and the legend outside on the right."""
  ax.set_xscale("log")
  ax.set_yscale("log")
  short = ticker.FuncFormatter(lambda v, _: _short(v))  # 25k, 6.5: not 2.5 x 10^4, 6.5 x 10^0
  ax.xaxis.set_major_formatter(short)
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # the x range spans decades
  ax.yaxis.set_major_formatter(short)
  ax.yaxis.set_minor_formatter(short)  # CBS ranges within a decade: label its minor ticks
  ax.set_xlabel(x_label, fontsize=11)
  ax.set_ylabel("critical batch size (sequences)", fontsize=11)
  ax.tick_params(labelsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def cbs_slices(groups: list[dict], law: dict, path: str) -> str:
  """Two panels: CBS vs N, one line per D; CBS vs D, one line per N; points with their bootstrap
  intervals where measured (`cbs_ci`), and the joint law c N^alpha D^beta dashed."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  usable = [g for g in groups if "cbs" in g]
  for ax, (x_key, line_key, x_label, line_label) in zip(
    axes,
    (
      ("n_params", "tokens", "non-embedding parameters N", "D"),
      ("tokens", "n_params", "data budget D (tokens)", "N"),
    ),
  ):
    for i, value in enumerate(sorted({g[line_key] for g in usable})):
      line = sorted((g for g in usable if g[line_key] == value), key=lambda g: g[x_key])
      x = np.array([g[x_key] for g in line], float)
      y = np.array([g["cbs"] for g in line], float)
      color = f"C{i % 10}"
      ci = [g.get("cbs_ci") for g in line]
      if all(c is not None for c in ci):
        lo = np.array([c[0] for c in ci], float)
        hi = np.array([c[1] for c in ci], float)
        ax.errorbar(
          x,
          y,
          yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)],
          color=color,
          marker="o",
          capsize=3,
          label=f"{line_label} = {_short(value)}",
        )
      else:
        ax.plot(x, y, marker="o", color=color, label=f"{line_label} = {_short(value)}")
      if law and x.size:
        grid = np.geomspace(x.min(), x.max(), 50)
        n, d = (grid, value) if x_key == "n_params" else (value, grid)
        ax.plot(
          grid,
          law["c"] * np.asarray(n, float) ** law["alpha"] * np.asarray(d, float) ** law["beta"],
          color=color,
          ls="--",
          alpha=0.6,
        )
    _style(ax, x_label)
  if law:
    fig.suptitle(
      f"CBS = {law['c']:.3g} N^{law['alpha']:.2f} D^{law['beta']:.2f} (dashed)", fontsize=12
    )
  fig.tight_layout()
  return plots.save(fig, path, DPI, tight=True)
