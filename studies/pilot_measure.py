"""Does the design have leverage on both axes? The pilot's measurement, before any sweep.

Model size can only show an effect on the CBS where capacity binds: the loss must differ across N at
the largest D by a real fraction of its change across D. Per candidate width the pilot has a run
trained to the largest D (loss at the smallest and at the largest D) and the steps to the smallest
D's target at B_opt and larger batches (B_noise = b / a of their fit). `decide` compares the loss
spread across the study's widths at the largest D with the mean spread across D at fixed N, and
names the widths to use instead when the first is below a third of the second.
"""

import dataclasses
import math

from analysis import fits
from analysis import runs as runs_lib

MIN_RATIO = 1 / 3  # N spread over D spread below which the study refuses to start


@dataclasses.dataclass(frozen=True)
class Width:
  width: float  # relative to the config's d_model
  d_model: int
  n_params: int
  loss_min_d: float  # best loss at the smallest D (raw or EWA), of the run trained to the largest
  loss_max_d: float  # ... at the largest D
  b_noise: float  # b / a of the steps to the smallest D's target against batch size
  points: tuple[tuple[int, float], ...]  # (batch, steps to that target)

  @property
  def d_spread(self) -> float:
    return self.loss_min_d - self.loss_max_d


def measure(
  width: float,
  d_model: int,
  long_run: runs_lib.Run,
  short_runs: list[runs_lib.Run],
  budgets: tuple[int, int],
  metric: str = "best",
) -> Width:
  """One width: `long_run` trained to the largest D, `short_runs` the B_opt run (first, trained to
  the smallest D: its loss there is the target) and runs at larger batches."""
  low, high = budgets
  target = runs_lib.loss_after(short_runs[0], low, metric)
  points = tuple(
    (r.batch_size, runs_lib.best_crossing(r, target, metric)[0]) for r in [*short_runs, long_run]
  )
  reached = [(b, s) for b, s in points if not math.isnan(s)]
  b_noise = math.nan
  if len({b for b, _ in reached}) >= 2:
    b_noise = fits.fit_steps([b for b, _ in reached], [s for _, s in reached]).b_noise
  return Width(
    width,
    d_model,
    long_run.n_params,
    runs_lib.loss_after(long_run, low, metric),
    runs_lib.loss_after(long_run, high, metric),
    b_noise,
    tuple(sorted(points)),
  )


@dataclasses.dataclass(frozen=True)
class Decision:
  n_spread: float  # loss range across the study's widths at the largest D
  d_spread: float  # mean over those widths of the loss change from the smallest to largest D
  ok: bool
  suggestion: tuple[float, ...]  # widths (as many as the study's) with the largest ratio

  @property
  def ratio(self) -> float:
    return self.n_spread / self.d_spread if self.d_spread > 0 else math.nan


def spreads(rows: list[Width]) -> tuple[float, float]:
  at_max = [r.loss_max_d for r in rows]
  return max(at_max) - min(at_max), sum(r.d_spread for r in rows) / len(rows)


def decide(rows: list[Width], widths: tuple[float, ...]) -> Decision:
  """Whether `widths` have leverage on N (N spread >= MIN_RATIO x D spread), and the run of as
  many consecutive measured widths with the largest ratio."""
  by_width = {r.width: r for r in rows}
  n_spread, d_spread = spreads([by_width[w] for w in widths])
  ordered = sorted(by_width)
  windows = [tuple(ordered[i : i + len(widths)]) for i in range(len(ordered) - len(widths) + 1)]

  def ratio(window):
    n, d = spreads([by_width[w] for w in window])
    return n / d if d > 0 else -math.inf

  best = max(windows, key=ratio) if windows else tuple(widths)
  ok = d_spread > 0 and n_spread >= MIN_RATIO * d_spread
  return Decision(n_spread, d_spread, ok, best if ratio(best) >= MIN_RATIO else ())
