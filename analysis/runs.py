"""Reads run directories (`config.json`, `metrics.jsonl`, `done.json`) into curves and CBS points.

Nothing here needs the run to have used this machine or a service: every number comes from the
workdir. Steps to target follow the paper's protocol (Zhang et al. 2024): the target is the loss the
reference-batch run reaches after the data budget D, both on EWA weights by default; the crossing is
interpolated linearly in log-loss between the two evaluations that bracket it.
"""

import dataclasses
import json
import math

import numpy as np
from etils import epath

from cbs.checkpoint import run_dir
from cbs.metrics import console as counts
from cbs.metrics import records

EVAL_PREFIX = "eval_loss"


@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  config: dict  # the run's full config (config.json)
  n_params: int  # non-embedding parameters
  evals: list[dict]  # eval records: step, tokens, eval_loss, eval_loss_ewa_<decay>...
  train: list[dict]  # train records: step, tokens, loss, batch_size, ...
  finished: bool
  floors: dict = dataclasses.field(default_factory=dict)  # known loss floors of the data (nats)

  @property
  def seed(self) -> int:
    return int(self.config.get("seed", 0))

  @property
  def batch_size(self) -> int:
    return int(self.config["batch"]["size"])

  @property
  def seq_len(self) -> int:
    return int(self.config["data"]["seq_len"])

  @property
  def data_budget(self) -> int:
    return int(self.config.get("data_budget_tokens") or self.config["train_tokens"])

  @property
  def adaptive(self) -> bool:
    return self.config["batch"]["schedule"] != "constant"

  def metrics(self) -> list[str]:
    return sorted({k for r in self.evals for k in r if k.startswith(EVAL_PREFIX)})


def read_metrics(workdir: epath.Path) -> list[dict]:
  """A run's metrics records, the last write of each step winning (a resumed run rewrites)."""
  merged: dict[tuple[int, bool], dict] = {}
  for r in records.read_records(workdir):
    key = (r["step"], any(k.startswith(EVAL_PREFIX) for k in r))
    merged[key] = {**merged.get(key, {}), **r}
  return [merged[k] for k in sorted(merged)]


def load_run(workdir, name: str | None = None) -> Run:
  workdir = epath.Path(workdir)
  info = run_dir.read_run_info(workdir)
  read = read_metrics(workdir)
  evals = [r for r in read if any(k.startswith(EVAL_PREFIX) for k in r)]
  train = [r for r in read if "loss" in r]
  return Run(
    name=name or workdir.name,
    workdir=str(workdir),
    config=info.config,
    n_params=int(info.params["non_embedding"]),
    evals=evals,
    train=train,
    finished=(workdir / run_dir.DONE).exists(),
    floors=info.floors,
  )


def load_sweep(root) -> list[Run]:
  """Every run of `root/manifest.json` that has started (holds a config.json)."""
  root = epath.Path(root)
  manifest = run_dir.read_manifest(root)
  if manifest is None:
    raise FileNotFoundError(f"{root} holds no {run_dir.MANIFEST} (is it a launch.sweep root?)")
  runs = []
  for entry in manifest["runs"]:
    workdir = epath.Path(entry["workdir"])
    if not run_dir.has_run(workdir):
      workdir = root / entry["name"]  # the root was moved or copied
    if run_dir.has_run(workdir):
      runs.append(load_run(workdir, entry["name"]))
  return runs


def at_budgets(runs: list[Run], budgets: list[int]) -> list[Run]:
  """Each run once per data budget D, as if its config had named that D.

  Valid for constant-LR runs (the paper's protocol): their curves do not depend on the run length,
  so one run trained to the largest D measures the target and the steps of every smaller D.
  """
  return [
    dataclasses.replace(r, config={**r.config, "data_budget_tokens": int(d)})
    for d in budgets
    for r in runs
  ]


def metric_names(metric: str, available: list[str]) -> list[str]:
  """Eval keys a metric choice stands for: best (raw and every EWA), none (raw), or an EWA name."""
  if metric == "best":
    return available
  key = EVAL_PREFIX if metric == "none" else f"{EVAL_PREFIX}_ewa_{metric}"
  if key not in available:
    raise ValueError(f"--ewa={metric!r}: the runs log {', '.join(available)}")
  return [key]


def loss_at(evals: list[dict], key: str, position: float, axis: str = "tokens") -> float:
  """Loss at a token (or step) count, interpolated linearly in log-loss; nan outside the evals."""
  xs = np.array([r[axis] for r in evals if key in r], dtype=np.float64)
  ys = np.array([r[key] for r in evals if key in r], dtype=np.float64)
  if xs.size == 0 or position < xs[0] or position > xs[-1]:
    return math.nan
  exact = np.nonzero(xs == position)[0]
  if exact.size:  # the recorded value: exp(log(y)) can exceed y by an ulp, and a target taken
    return float(ys[exact[-1]])  # here would then never be reached by the run that set it
  return float(np.exp(np.interp(position, xs, np.log(ys))))


def first_crossing(xs, losses, target: float) -> float:
  """First x at which the loss reaches `target`; nan if it never does.

  Interpolates log-loss linearly between the two points that bracket the first crossing (the
  quantisation of steps by the eval schedule would otherwise bias steps to target upwards).
  """
  losses = np.asarray(losses, dtype=np.float64)
  below = np.nonzero(losses <= target)[0]
  if below.size == 0:
    return math.nan
  i = int(below[0])
  if i == 0:
    return float(xs[0])
  y0, y1 = math.log(losses[i - 1]), math.log(losses[i])
  return float(xs[i - 1] + (y0 - math.log(target)) / (y0 - y1) * (xs[i] - xs[i - 1]))


def crossing(evals: list[dict], key: str, target: float, axis: str = "step") -> float:
  """First step (or token count) at which the eval loss `key` reaches `target`; nan if never."""
  points = [r for r in evals if key in r]
  return first_crossing([r[axis] for r in points], [r[key] for r in points], target)


def best_crossing(run: Run, target: float, metric: str, axis: str = "step") -> tuple[float, str]:
  """The earliest crossing over the metric's eval keys (EWA decay is a swept hyper-parameter)."""
  found = [(crossing(run.evals, k, target, axis), k) for k in metric_names(metric, run.metrics())]
  found = [f for f in found if not math.isnan(f[0])]
  return min(found) if found else (math.nan, "")


def loss_after(run: Run, tokens: float, metric: str) -> float:
  """The best loss over the metric's keys after `tokens` (the target when run is the reference)."""
  values = [loss_at(run.evals, k, tokens) for k in metric_names(metric, run.metrics())]
  values = [v for v in values if not math.isnan(v)]
  return min(values) if values else math.nan


def best_curve(run: Run, metric: str) -> tuple[str, list[dict]]:
  """The eval key with the lowest final loss and its records (for loss-curve plots)."""
  keys = metric_names(metric, run.metrics())
  finals = {k: [r[k] for r in run.evals if k in r][-1] for k in keys}
  key = min(finals, key=finals.get)
  return key, [r for r in run.evals if key in r]


def group_key(run: Run) -> tuple:
  """Runs of one CBS measurement share the model and the data budget D."""
  return (
    json.dumps(run.config["model"], sort_keys=True),
    run.n_params,
    run.data_budget,
    run.seq_len,
  )


def group_name(run: Run) -> str:
  return f"N={counts.short(run.n_params)},D={counts.short(run.data_budget)}"
