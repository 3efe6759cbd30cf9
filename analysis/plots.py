"""PNG figures of a CBS measurement (matplotlib, headless). Each function writes one file."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis import fits  # noqa: E402
from analysis import runs as runs_lib  # noqa: E402

SIZE = (6.4, 4.4)
DPI = 100


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def steps_vs_batch(groups: list[dict], path: str) -> str:
  """Steps to target vs batch size per group: points, the a + b/B fit, linear scaling, the CBS."""
  fig, ax = plt.subplots(figsize=SIZE)
  for i, g in enumerate(groups):
    color = f"C{i}"
    batch = np.array([r["batch_size"] for r in g["best"]], dtype=float)
    steps = np.array([r["steps"] for r in g["best"]], dtype=float)
    ax.scatter(batch, steps, color=color, zorder=3, label=f"{g['name']}")
    if "cbs" in g and batch.size:
      grid = np.geomspace(batch.min() / 1.5, batch.max() * 1.5, 200)
      fit = fits.StepsFit(g["a"], g["b"], g["rmse_log"])
      ax.plot(grid, fit.steps(grid), color=color, label=f"fit a={g['a']:.3g}, b={g['b']:.3g}")
      reference = fit.steps(g["b_opt"]) * g["b_opt"] / grid
      ax.plot(grid, reference, color=color, ls=":", alpha=0.7, label="linear scaling")
      ax.axvline(g["cbs"], color=color, ls="--", alpha=0.7, label=f"CBS {g['cbs']:.0f}")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("batch size (sequences)")
  ax.set_ylabel("steps to target loss")
  ax.set_title("Steps to target vs batch size")
  ax.legend(fontsize=7)
  return _save(fig, path)


def cbs_scaling(groups: list[dict], laws: dict, key: str, path: str) -> str:
  """CBS vs N (key n_params) or vs D (key tokens) with the fitted power law."""
  label = {"n_params": "non-embedding parameters N", "tokens": "data budget D (tokens)"}[key]
  fig, ax = plt.subplots(figsize=SIZE)
  x = np.array([g[key] for g in groups if "cbs" in g], dtype=float)
  y = np.array([g["cbs"] for g in groups if "cbs" in g], dtype=float)
  ax.scatter(x, y, zorder=3, label="measured CBS")
  if key in laws:
    law = laws[key]
    grid = np.geomspace(x.min() / 1.3, x.max() * 1.3, 100)
    lo, hi = law["exponent_ci"]
    ax.plot(grid, law["d"] * grid ** law["exponent"],
            label=f"CBS = {law['d']:.3g} x^{law['exponent']:.2f} (95% CI {lo:.2f}..{hi:.2f})")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(label)
  ax.set_ylabel("critical batch size (sequences)")
  ax.legend(fontsize=8)
  return _save(fig, path)


def loss_curves(runs: list[runs_lib.Run], group: dict, metric: str, path: str) -> str:
  """Eval loss (the run's best EWA) vs tokens and vs steps, the best run of each batch size."""
  best = {row["run"] for row in group["best"]}
  chosen = [r for r in runs if r.name in best] or runs
  fig, (left, right) = plt.subplots(1, 2, figsize=(2 * SIZE[0], SIZE[1]))
  for i, r in enumerate(sorted(chosen, key=lambda r: r.batch_size)):
    key, records = runs_lib.best_curve(r, metric)
    color = plt.cm.viridis(i / max(len(chosen) - 1, 1))
    label = f"B={r.batch_size}"
    left.plot([x["tokens"] for x in records], [x[key] for x in records], color=color,
              label=label)
    right.plot([x["step"] for x in records], [x[key] for x in records], color=color,
               label=label)
  for ax, xlabel in ((left, "tokens"), (right, "steps")):
    ax.axhline(group["target"], color="k", ls="--", lw=0.8, label="target")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval loss")
  left.legend(fontsize=7)
  fig.suptitle(f"{group['name']}: loss curves by batch size")
  return _save(fig, path)


def schedules(runs: list[runs_lib.Run], metric: str, path: str) -> str:
  """Batch size vs tokens, and loss vs tokens and vs steps, for adaptive and constant runs."""
  fig, axes = plt.subplots(1, 3, figsize=(3 * SIZE[0] * 0.8, SIZE[1]))
  for i, r in enumerate(sorted(runs, key=lambda r: (r.adaptive, r.batch_size, r.name))):
    label = f"{r.config['batch']['schedule']} {r.name}"[:48]
    style = "-" if r.adaptive else "--"
    axes[0].plot([x["tokens"] for x in r.train], [x["batch_size"] for x in r.train], style,
                 color=f"C{i}", label=label)
    key, records = runs_lib.best_curve(r, metric)
    axes[1].plot([x["tokens"] for x in records], [x[key] for x in records], style, color=f"C{i}")
    axes[2].plot([x["step"] for x in records], [x[key] for x in records], style, color=f"C{i}")
  axes[0].set(xlabel="tokens", ylabel="batch size (sequences)", yscale="log", title="batch size")
  axes[1].set(xlabel="tokens", ylabel="eval loss", title="loss vs tokens")
  axes[2].set(xlabel="steps", ylabel="eval loss", xscale="log", title="loss vs steps")
  axes[0].legend(fontsize=6)
  return _save(fig, path)


def local_cbs(run: runs_lib.Run, probe: dict, path: str) -> str:
  """Probed local CBS over training, the online noise-scale estimate, and the batch the run used."""
  fig, ax = plt.subplots(figsize=SIZE)
  points = probe["points"]
  ax.plot([p["tokens"] for p in points], [p["local_cbs"] for p in points], "o-", color="C0",
          label=f"local CBS (branching, eps={probe['eps']})")
  gns = [(r["tokens"], r["grad_noise_scale"]) for r in run.train
         if r.get("grad_noise_scale", 0) > 0 and np.isfinite(r["grad_noise_scale"])]
  if gns:
    ax.plot(*zip(*gns), ".", color="C1", alpha=0.5, ms=3, label="gradient noise scale (online)")
  ax.step([r["tokens"] for r in run.train], [r["batch_size"] for r in run.train], where="post",
          color="k", lw=1, label="batch size of the run")
  ax.set(xlabel="tokens", ylabel="sequences", yscale="log", title=f"{run.name}: local CBS")
  ax.legend(fontsize=7)
  return _save(fig, path)


def theory(result: dict, path: str) -> str:
  """Testbed CBS vs data size: expected-risk and simulated points, fits, the predicted slope."""
  fig, ax = plt.subplots(figsize=SIZE)
  budgets = np.array(result["budgets"], dtype=float)
  for i, name in enumerate(("expected", "simulated")):
    part = result[name]
    cbs = [part["groups"][str(d)]["cbs"] for d in result["budgets"]]
    ax.plot(budgets, cbs, "o", color=f"C{i}", label=f"{name} risk")
    ax.plot(budgets, part["d"] * budgets ** part["exponent"], color=f"C{i}",
            label=f"fit D^{part['exponent']:.2f}")
  anchor = result["expected"]["groups"][str(result["budgets"][0])]["cbs"]
  gamma = result["predicted_exponent"]
  ax.plot(budgets, anchor * (budgets / budgets[0]) ** gamma, "k--", label=f"predicted D^{gamma:.2f}")
  ax.set(xscale="log", yscale="log", xlabel="data size D (samples)", ylabel="CBS (samples)",
         title="Least-squares testbed")
  ax.legend(fontsize=8)
  return _save(fig, path)


def coord_check(widths, sizes: dict, path: str) -> str:
  """RMS change of the last hidden state and of the logits vs width, per parameterization."""
  fig, axes = plt.subplots(1, 2, figsize=(2 * SIZE[0], SIZE[1]))
  for ax, key in zip(axes, ("hidden", "logits")):
    for i, (param, rows) in enumerate(sizes.items()):
      ax.plot(widths, [r[key] for r in rows], "o-", color=f"C{i}", label=param)
    ax.set(xscale="log", yscale="log", xlabel="width d_model",
           ylabel=f"RMS change of the {key} after 3 Adam steps", title=key)
    ax.legend()
  fig.suptitle("Coordinate check: muP keeps update sizes stable across widths")
  return _save(fig, path)
