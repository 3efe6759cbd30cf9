"""PNG figures of a CBS measurement (matplotlib, headless). Each function writes one file."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from analysis import fits
from analysis import runs as runs_lib

SIZE = (6.4, 4.4)
DPI = 100
# Type that stays readable when a figure is scaled down to a column of a paper.
matplotlib.rcParams.update(
  {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
  }
)
SCHEDULE_NAMES = {
  "norm": "norm test",
  "inner_product": "inner-product test",
  "augmented": "augmented inner-product test",
  "gns": "noise-scale schedule",
  "ramp": "stagewise ramp",
  "measured": "measured local CBS",
}


def loss_label(metric: str | None) -> str:
  """What a loss axis shows, for a `--ewa` choice (see `runs_lib.metric_names`)."""
  if metric == "best":
    return "eval loss (best of raw and EWA weights)"
  if metric == "none":
    return "eval loss (raw weights)"
  return f"eval loss (EWA {metric})" if metric else "loss"


def run_label(run: runs_lib.Run, runs: list[runs_lib.Run]) -> str:
  """A run named by what it is ("constant 4", "norm test"), its lr added where that is ambiguous."""
  schedule = run.config["batch"]["schedule"]
  label = (
    f"constant {run.batch_size}"
    if schedule == "constant"
    else SCHEDULE_NAMES.get(schedule, schedule)
  )
  same = [
    r
    for r in runs
    if r.config["batch"]["schedule"] == schedule
    and (schedule != "constant" or r.batch_size == run.batch_size)
  ]
  if len(same) < 2:
    return label
  # the knobs that tell runs of one schedule apart: the test's own, then the learning rate
  knobs = [("batch", k) for k in ("eta", "theta", "stats_ema", "test_interval", "lr_scaling")]
  knobs.append(("optimizer", "lr"))
  differ = [(part, k) for part, k in knobs if len({str(r.config[part].get(k)) for r in same}) > 1]
  return ", ".join(
    [
      label,
      *(
        f"{k} {run.config[part].get(k):g}"
        if isinstance(run.config[part].get(k), float)
        else f"{k} {run.config[part].get(k)}"
        for part, k in differ
      ),
    ]
  )


def _figure(ncols: int = 1, width: float = SIZE[0], height: float = SIZE[1]):
  """A figure whose layout makes room for a legend placed outside the axes."""
  return plt.subplots(1, ncols, figsize=(width, height), layout="constrained")


def _legend(fig, handles=None, labels=None, where: str = "right"):
  """The legend outside every axes (right of them, or below), so it never covers data."""
  if handles is None:
    handles, labels = fig.axes[0].get_legend_handles_labels()
  if where == "right":
    return fig.legend(handles, labels, loc="outside right upper")
  return fig.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 3))


def save(fig, path: str, dpi: int = DPI, tight: bool = False) -> str:
  """Writes `fig` to `path` and frees it (figures are many in a study's report); `tight` crops to
  the drawn content, for figures whose legends sit outside the axes."""
  fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
  plt.close(fig)
  return path


def steps_vs_batch(groups: list[dict], path: str, metric: str | None = None) -> str:
  """Steps to target vs batch size per group: the points, the a + b/B fit, linear scaling, the CBS
  with its bootstrap interval, and the runs that never reached the target (at their last step)."""
  fig, ax = _figure(width=10, height=5.2)
  handles, marked = [], False
  for i, g in enumerate(groups):
    color = f"C{i}" if len(groups) <= 10 else plt.cm.tab20(i % 20)  # no repeated colours
    batch = np.array([r["batch_size"] for r in g["best"]], dtype=float)
    steps = np.array([r["steps"] for r in g["best"]], dtype=float)
    ax.scatter(batch, steps, color=color, zorder=3)
    never = [
      (r["batch_size"], r["final_step"])
      for r in g.get("runs", ())
      if not r["reached"] and not r.get("capped") and r["final_step"] > 0
    ]
    if never:
      ax.scatter(*zip(*never), marker="^", facecolors="none", edgecolors=color, zorder=3)
      marked = True
    label = g["name"]
    if "cbs" in g and batch.size:
      grid = np.geomspace(batch.min() / 1.5, batch.max() * 1.5, 200)
      fit = fits.StepsFit(g["a"], g["b"], g["rmse_log"])
      ax.plot(grid, fit.steps(grid), color=color)
      ax.plot(grid, fit.steps(g["b_opt"]) * g["b_opt"] / grid, color=color, ls=":", alpha=0.7)
      ax.axvline(g["cbs"], color=color, ls="--", alpha=0.8)
      lo, hi = g.get("cbs_ci", (np.nan, np.nan))
      label += f": CBS {g['cbs']:.1f}"
      if np.isfinite([lo, hi]).all():
        ax.axvspan(lo, hi, color=color, alpha=0.1, lw=0)
        label += f" [{lo:.1f}, {hi:.1f}]"
    handles.append(Line2D([], [], color=color, marker="o", label=label))
  gray = "0.4"
  handles += [
    Line2D([], [], color=gray, marker="o", ls="", label="best run per batch size"),
    Line2D([], [], color=gray, label="fit a + b/B"),
    Line2D([], [], color=gray, ls=":", label="linear scaling from B_opt"),
    Line2D([], [], color=gray, ls="--", label="CBS (band: 95% bootstrap)"),
  ]
  if marked:
    handles.append(
      Line2D(
        [],
        [],
        color=gray,
        marker="^",
        markerfacecolor="none",
        ls="",
        label="never reached the target\n(at its last step)",
      )
    )
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("batch size (sequences)")
  ax.set_ylabel("steps to the target loss")
  ax.set_title(
    "Steps to target vs batch size"
    + (f"\ntarget and crossings on the {loss_label(metric)}" if metric else "")
  )
  _legend(fig, handles, [h.get_label() for h in handles])
  return save(fig, path)


def cbs_scaling(groups: list[dict], laws: dict, key: str, path: str) -> str:
  """CBS vs N (key n_params) or vs D (key tokens) with the fitted power law."""
  label = {"n_params": "non-embedding parameters N", "tokens": "data budget D (tokens)"}[key]
  fig, ax = _figure(height=5.2)
  usable = [g for g in groups if "cbs" in g]
  x = np.array([g[key] for g in usable], dtype=float)
  y = np.array([g["cbs"] for g in usable], dtype=float)
  ci = np.array([g.get("cbs_ci", (np.nan, np.nan)) for g in usable], dtype=float).reshape(-1, 2)
  if np.isfinite(ci).all() and ci.size:
    ax.errorbar(
      x,
      y,
      yerr=[np.maximum(y - ci[:, 0], 0), np.maximum(ci[:, 1] - y, 0)],
      fmt="o",
      zorder=3,
      capsize=3,
      label="fitted CBS, 95% bootstrap interval",
    )
  else:
    ax.scatter(x, y, zorder=3, label="fitted CBS")
  if key in laws:
    law = laws[key]
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 100)
    lo, hi = law["exponent_ci"]
    ax.plot(
      grid,
      law["d"] * grid ** law["exponent"],
      label=f"CBS = {law['d']:.3g} x^{law['exponent']:.2f} (95% CI {lo:.2f}..{hi:.2f})",
    )
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(label)
  ax.set_ylabel("critical batch size (sequences)")
  _legend(fig, where="below")
  return save(fig, path)


def loss_curves(runs: list[runs_lib.Run], group: dict, metric: str, path: str) -> str:
  """Eval loss (the run's best EWA) vs tokens and vs steps, the best run of each batch size."""
  best = {row["run"] for row in group["best"]}
  chosen = [r for r in runs if r.name in best] or runs
  fig, (left, right) = _figure(2, width=2 * SIZE[0] + 1.5)
  for i, r in enumerate(sorted(chosen, key=lambda r: r.batch_size)):
    key, records = runs_lib.best_curve(r, metric)
    color = plt.cm.viridis(i / max(len(chosen) - 1, 1))
    label = f"B={r.batch_size}"
    left.plot([x["tokens"] for x in records], [x[key] for x in records], color=color, label=label)
    right.plot([x["step"] for x in records], [x[key] for x in records], color=color, label=label)
  for ax, xlabel in ((left, "tokens"), (right, "steps")):
    ax.axhline(group["target"], color="k", ls="--", lw=0.8, label="target")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(loss_label(metric))
  _legend(fig)
  fig.suptitle(f"{group['name']}: loss curves by batch size")
  return save(fig, path)


def schedules(runs: list[runs_lib.Run], metric: str, path: str) -> str:
  """Batch size vs tokens, and loss vs tokens and vs steps, for adaptive and constant runs."""
  fig, axes = _figure(3, width=3 * SIZE[0] * 0.8, height=SIZE[1] + 0.6)
  for i, r in enumerate(sorted(runs, key=lambda r: (r.adaptive, r.batch_size, r.name))):
    style = "-" if r.adaptive else "--"
    axes[0].plot(
      [x["tokens"] for x in r.train],
      [x["batch_size"] for x in r.train],
      style,
      color=f"C{i}",
      label=run_label(r, runs),
    )
    key, records = runs_lib.best_curve(r, metric)
    axes[1].plot([x["tokens"] for x in records], [x[key] for x in records], style, color=f"C{i}")
    axes[2].plot([x["step"] for x in records], [x[key] for x in records], style, color=f"C{i}")
  axes[0].set(xlabel="tokens", ylabel="batch size (sequences)", yscale="log", title="batch size")
  axes[1].set(xlabel="tokens", ylabel=loss_label(metric), title="loss vs tokens")
  axes[2].set(xlabel="steps", ylabel=loss_label(metric), xscale="log", title="loss vs steps")
  _legend(fig, where="below")
  return save(fig, path)


def local_cbs(run: runs_lib.Run, probe: dict, path: str) -> str:
  """Probed local CBS over training, the online noise-scale estimate, and the batch the run used."""
  fig, ax = _figure(height=5.2)
  points = probe["points"]
  ax.plot(
    [p["tokens"] for p in points],
    [p["local_cbs"] for p in points],
    "o-",
    color="C0",
    label=f"local CBS (branching, eps={probe['eps']})",
  )
  gns = [
    (r["tokens"], r["grad_noise_scale"])
    for r in run.train
    if r.get("grad_noise_scale", 0) > 0 and np.isfinite(r["grad_noise_scale"])
  ]
  if gns:
    ax.plot(*zip(*gns), ".", color="C1", alpha=0.5, ms=3, label="gradient noise scale (online)")
  ax.step(
    [r["tokens"] for r in run.train],
    [r["batch_size"] for r in run.train],
    where="post",
    color="k",
    lw=1,
    label="batch size of the run",
  )
  ax.set(xlabel="tokens", ylabel="sequences", yscale="log", title=f"{run.name}: local CBS")
  _legend(fig, where="below")
  return save(fig, path)


def theory(result: dict, path: str) -> str:
  """Testbed CBS vs data size: expected-risk and simulated points, fits, the predicted slope."""
  fig, ax = _figure()
  budgets = np.array(result["budgets"], dtype=float)
  for i, name in enumerate(("expected", "simulated")):
    part = result[name]
    cbs = [part["groups"][str(d)]["cbs"] for d in result["budgets"]]
    ax.plot(budgets, cbs, "o", color=f"C{i}", label=f"{name} risk")
    ax.plot(
      budgets,
      part["d"] * budgets ** part["exponent"],
      color=f"C{i}",
      label=f"fit D^{part['exponent']:.2f}",
    )
  anchor = result["expected"]["groups"][str(result["budgets"][0])]["cbs"]
  gamma = result["predicted_exponent"]
  ax.plot(
    budgets, anchor * (budgets / budgets[0]) ** gamma, "k--", label=f"predicted D^{gamma:.2f}"
  )
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="data size D (samples)",
    ylabel="CBS (samples)",
    title="Least-squares testbed",
  )
  ax.legend(fontsize=8)
  return save(fig, path)


def coord_check(widths, sizes: dict, path: str) -> str:
  """RMS change of the last hidden state and of the logits vs width, per parameterization."""
  fig, axes = _figure(2, width=2 * SIZE[0])
  for ax, key in zip(axes, ("hidden", "logits")):
    for i, (param, rows) in enumerate(sizes.items()):
      ax.plot(widths, [r[key] for r in rows], "o-", color=f"C{i}", label=param)
    ax.set(
      xscale="log",
      yscale="log",
      xlabel="width d_model",
      ylabel=f"RMS change of the {key} after 3 Adam steps",
      title=key,
    )
    ax.legend()
  fig.suptitle("Coordinate check: muP keeps update sizes stable across widths")
  return save(fig, path)
