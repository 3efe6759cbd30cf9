"""Local critical batch size by branching (Merrill et al. 2025): `python -m launch.probe`.

    python -m launch.probe --workdir=RUN --at_tokens=T1,T2 --k=0.5,1,2,4,8 --branch_tokens=N
        [--eps=0.01] [--lr_exponent=0.5] [--tolerance=0.1] [--backend=inprocess|local|gpus]

From RUN's checkpoint nearest to each token count (refused when none lies within tolerance x T
of T: RUN must be trained with `checkpoint.every_tokens` and `checkpoint.keep` that keep one
there), branches runs at k x B with
the learning rate scaled by k^lr_exponent (sqrt for Adam), each trained N more tokens on the same
data stream. A branch's loss is its raw-weight loss on the run's fixed held-out set at the end
(every branch is scored on the same examples, which removes the sampling noise a train-loss
average would keep). k* is the largest k whose loss stays within eps of every smaller k's; the
local CBS is k* x B; next to it goes the median of the run's online noise-scale estimate over the
last 20% of tokens before the branch point. Branches are ordinary runs under RUN/probes (resumable,
skipped once finished); the result goes to RUN/probes/probe.json.
"""

import json
import math
import sys

import ml_collections
import numpy as np
from absl import app
from absl import flags
from etils import epath

from cbs.batching import schedules as batch_schedules
from cbs.checkpoint import checkpoints as checkpoint
from cbs.checkpoint import run_dir
from cbs.config import overrides as config_overrides
from cbs.metrics import records
from configs import base
from launch import backends
from launch import grid
from launch import outcome

_WORKDIR = flags.DEFINE_string("workdir", None, "The run to probe.")
_AT = flags.DEFINE_list("at_tokens", None, "Token counts to branch at (the nearest checkpoint).")
_K = flags.DEFINE_list("k", ["0.5", "1", "2", "4", "8"], "Batch multipliers.")
_BRANCH = flags.DEFINE_integer("branch_tokens", None, "Tokens each branch trains.")
_EPS = flags.DEFINE_float("eps", 0.01, "Loss tolerance of k*.")
_LR_EXPONENT = flags.DEFINE_float(
  "lr_exponent", 0.5, "Branch lr = lr x k^this (0.5: Adam, 1: SGD)."
)
_TOLERANCE = flags.DEFINE_float(
  "tolerance",
  0.1,
  "Largest distance of the checkpoint used from a requested token count, as a fraction of it.",
)
_BACKEND = flags.DEFINE_enum(
  "backend",
  "inprocess",
  ("inprocess", "local", "gpus"),
  "Where the branches run (launch.sweep's backends).",
)


def k_star(ks: list[float], losses: list[float], eps: float) -> float:
  """The largest k whose loss is within eps of the loss of every smaller k."""
  order = sorted(range(len(ks)), key=lambda i: ks[i])
  best = ks[order[0]]
  for n, i in enumerate(order):
    if all(losses[i] <= losses[j] + eps for j in order[:n]):
      best = ks[i]
  return best


def checkpoint_points(
  workdir: epath.Path, at_tokens: list[int], tolerance: float = 0.1
) -> list[dict]:
  """For each token count, the checkpoint nearest to it: step, tokens, batch size.

  Checkpoints land on the first step past each `checkpoint.every_tokens`, so a requested round
  number is rarely hit exactly; the probe reports the tokens it actually branched at. A checkpoint
  more than `tolerance` x T away from T is refused (ValueError): early points would otherwise
  collapse silently onto the checkpoints a run kept (`checkpoint.keep` deletes older ones).
  """
  ckpts = checkpoint.Checkpoints(workdir, keep=1_000_000)
  progress = {s: ckpts.progress(s) for s in ckpts.all_steps()}
  ckpts.close()
  points = []
  if not progress:
    raise ValueError(f"--workdir={workdir} has no checkpoint to branch from")
  for t in at_tokens:
    step = min(progress, key=lambda s: (abs(progress[s]["tokens"] - t), s))
    if abs(progress[step]["tokens"] - t) > tolerance * t:
      kept = ", ".join(f"{progress[s]['tokens']:,}" for s in sorted(progress))
      raise ValueError(
        f"--at_tokens={t}: no checkpoint within --tolerance={tolerance:g} x {t:,} tokens (it keeps"
        f" {kept}); train the run with checkpoint.every_tokens and checkpoint.keep that keep one"
      )
    points.append(
      {
        "step": step,
        "tokens": progress[step]["tokens"],
        "batch": int(progress[step]["batch"]["size"]),
      }
    )
  return points


def branch_runs(
  workdir: epath.Path,
  parent: dict,
  point: dict,
  ks: list[float],
  branch_tokens: int,
  lr_exponent: float,
):
  """launch.grid Runs of one branch point: the parent's config with the branch's overrides."""
  batch_cfg = ml_collections.ConfigDict(parent["batch"])
  lr_now = parent["optimizer"]["lr"] * batch_schedules.lr_multiplier(batch_cfg, point["batch"])
  inherited = config_overrides.changed(parent)
  runs = []
  for k in ks:
    size = int(round(k * point["batch"]))
    overrides = {
      **inherited,
      "batch.size": size,
      "batch.max_size": -1,
      "batch.schedule": "constant",
      "batch.lr_scaling": "none",
      "batch.ramp": [],
      "batch.gns_every": 0,
      "optimizer.lr": lr_now * k**lr_exponent,
      "train_tokens": point["tokens"] + branch_tokens,
      "data_budget_tokens": 0,
      "eval.every_tokens": branch_tokens,
      "checkpoint.every_tokens": branch_tokens,
      "train.init_from": str(workdir),
      "train.init_step": point["step"],
      "train.stop_loss": 0.0,
    }
    runs.append(grid.Run(f"tokens={point['tokens']},k={k:g}", base.__file__, overrides))
  return runs


def branch_loss(workdir: epath.Path) -> float:
  evals = [r for r in records.read_records(workdir) if "eval_loss" in r]
  return float(evals[-1]["eval_loss"]) if evals else math.nan


def online_noise_scale(records: list[dict], tokens: int, window: float = 0.2) -> float:
  """Median of a run's logged gradient noise scale over [(1 - window) T, T] (nan if none).

  Single-step estimates are noisy; the median over the stretch of training before the branch
  point is what the probe compares with.
  """
  values = [
    r["grad_noise_scale"]
    for r in records
    if "grad_noise_scale" in r and (1 - window) * tokens <= r["tokens"] <= tokens
  ]
  return float(np.median(values)) if values else math.nan


def probe(
  workdir: str,
  at_tokens: list[int],
  ks: list[float],
  branch_tokens: int,
  eps: float,
  lr_exponent: float,
  backend: str,
  tolerance: float = 0.1,
) -> dict:
  workdir = epath.Path(workdir)
  if not run_dir.has_run(workdir):
    raise ValueError(f"--workdir={workdir} holds no run (no {run_dir.RUN_INFO})")
  if branch_tokens is None or branch_tokens <= 0 or not ks or min(ks) <= 0:
    raise ValueError(f"--branch_tokens={branch_tokens} and --k={ks} must be positive")
  parent = run_dir.read_config(workdir)
  root = workdir / run_dir.PROBES
  points = checkpoint_points(workdir, at_tokens, tolerance)
  runs = [
    r for p in points for r in branch_runs(workdir, parent, p, ks, branch_tokens, lr_exponent)
  ]
  backends.write_manifest(root, "launch.probe", runs)
  todo = [r for r in runs if not outcome.is_settled(root / r.name)]
  backends.WAITING[backend](todo, root)
  backends.write_manifest(root, "launch.probe", runs)
  parent_records = records.read_records(workdir)
  results = []
  for p in points:
    losses = [branch_loss(root / f"tokens={p['tokens']},k={k:g}") for k in ks]
    star = k_star(ks, losses, eps)
    results.append(
      {
        **p,
        "k": ks,
        "losses": losses,
        "k_star": star,
        "local_cbs": star * p["batch"],
        "grad_noise_scale": online_noise_scale(parent_records, p["tokens"]),
      }
    )
  out = {
    "workdir": str(workdir),
    "branch_tokens": branch_tokens,
    "eps": eps,
    "lr_exponent": lr_exponent,
    "points": results,
  }
  (root / run_dir.PROBE_RESULT).write_text(json.dumps(out, indent=2))
  return out


def main(argv: list[str]) -> None:
  del argv
  try:
    result = probe(
      _WORKDIR.value,
      [int(float(t)) for t in _AT.value],
      [float(k) for k in _K.value],
      _BRANCH.value,
      _EPS.value,
      _LR_EXPONENT.value,
      _BACKEND.value,
      _TOLERANCE.value,
    )
  except ValueError as e:
    print(f"launch.probe: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{'tokens':>12} {'batch':>6} {'k*':>5} {'local CBS':>10} {'noise scale':>12}  losses by k")
  for p in result["points"]:
    losses = " ".join(f"{k:g}:{v:.4f}" for k, v in zip(p["k"], p["losses"]))
    print(
      f"{p['tokens']:>12,} {p['batch']:>6} {p['k_star']:>5g} {p['local_cbs']:>10g} "
      f"{p['grad_noise_scale']:>12.4g}  {losses}"
    )
  print(f"written: {epath.Path(_WORKDIR.value) / run_dir.PROBES / run_dir.PROBE_RESULT}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "at_tokens", "branch_tokens"])
  app.run(main)
