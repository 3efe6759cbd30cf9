"""`launch.sweep --status`: where every run of a sweep stands, read from its run directory alone."""

from etils import epath

from analysis import runs as runs_lib
from cbs.checkpoint import run_dir
from cbs.checkpoint import workdir_lock
from launch import outcome

STATUSES = (*outcome.STATUSES, "running elsewhere")


def row(name: str, workdir: epath.Path) -> list[str]:
  """run, status, tokens trained, last train loss, and why it failed (or who is running it: a
  live run holding the workdir's lock, started by another launch)."""
  status = outcome.status(workdir)
  holder = None if outcome.is_settled(workdir) else workdir_lock.live_holder(workdir)
  if holder is not None:
    status = "running elsewhere"
  records = runs_lib.read_metrics(workdir)
  tokens = max((r["tokens"] for r in records if "tokens" in r), default=0)
  losses = [r["loss"] for r in records if "loss" in r]
  return [
    name,
    status,
    f"{tokens:,}",
    f"{losses[-1]:.4f}" if losses else "-",
    holder.describe() if holder else outcome.failure(workdir).get("reason", ""),
  ]


def render(root: epath.Path) -> str:
  manifest = run_dir.read_manifest(root)
  if manifest is None:
    raise FileNotFoundError(
      f"--root={root} holds no {run_dir.MANIFEST} (is it a launch.sweep root?)"
    )
  rows = [["run", "status", "tokens", "last loss", "reason"]]
  rows += [row(e["name"], root / e["name"]) for e in manifest["runs"]]
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = [
    "  ".join(
      [*(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))), r[4]]
    ).rstrip()
    for r in rows
  ]
  counts = {s: sum(r[1] == s for r in rows[1:]) for s in STATUSES}
  return "\n".join(lines + [", ".join(f"{n} {s}" for s, n in counts.items() if n)])
