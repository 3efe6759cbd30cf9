"""The report's answer to "does the CBS scale with data or with model size?": the sentence, the
exponents of the joint law with their intervals and the design's power, the check without the
groups a linear-regime guard flags, the figure of CBS against N and D, and the (N, D) tables.
It lays out an answer computed by `scaling_laws` or `run_level_law`; it computes nothing."""

import math

from analysis import answer_plots
from analysis import report as report_lib
from cbs.metrics.console import short as _short


def sensitivity_blocks(laws: list[tuple[str, dict]]) -> list:
  """Each law refitted without the groups a linear-regime guard flags: whether they drive it."""
  rows, left_out = [], []
  for label, law in laws:
    check = law.get("without_flagged")
    if not check:
      continue
    left_out = check["left_out"]
    for key in ("beta", "alpha"):
      lo, hi = check[f"{key}_ci"]
      rows.append(
        [f"{label}: {key}", f"{law[key]:.3f}", f"{check[key]:.3f}", f"[{lo:.3f}, {hi:.3f}]"]
      )
  if not rows:
    return []
  names = "; ".join(f"N={g['n_params']:,.0f}, D={g['tokens']:,.0f} ({g['why']})" for g in left_out)
  return [
    report_lib.paragraph(
      f"Check: the same laws without the {len(left_out)} group(s) a linear-regime guard "
      f"flags ({names}). Leaving groups out by their measured value selects on the "
      "outcome, so this is a check of how much they move the answer, not an answer."
    ),
    report_lib.table(["exponent", "all groups", "without flagged", "95% interval"], rows),
  ]


def exponent_rows(laws: list[tuple[str, dict]]) -> list[list[str]]:
  """Per law: beta and alpha with their intervals and detectable sizes, and the coupled exponent."""
  rows = []
  for label, law in laws:
    for key, what in (("beta", "D^beta at fixed N"), ("alpha", "N^alpha at fixed D")):
      lo, hi = law[f"{key}_ci"]
      detect = law.get("power", {}).get(key, math.nan)
      rows.append(
        [
          f"{label} ~ {what}",
          f"{law[key]:.3f}",
          f"[{lo:.3f}, {hi:.3f}]",
          "-" if math.isnan(detect) else f"{detect:.3f}",
        ]
      )
    coupled = law.get("coupled")
    if coupled:
      lo, hi = coupled["exponent_ci"]
      rows.append(
        [
          f"{label} ~ N^gamma, D proportional to N ({len(coupled['points'])} sizes)",
          f"{coupled['exponent']:.3f}",
          f"[{lo:.3f}, {hi:.3f}]",
          "-",
        ]
      )
  return rows


def interval_method(answer: dict) -> str:
  """How the answer's intervals were drawn: points, runs of every seed, or batch sizes."""
  seeds = answer.get("seeds", 1)
  if "resampled" not in answer:
    return "intervals resample each group's points"
  if seeds > 1:
    return (
      f"intervals resample runs: {seeds} seeds drawn in every (N, batch, learning rate) cell "
      f"({answer['samples']} samples), every budget recomputed from the drawn runs, widened "
      "by t / z for the few degrees of freedom of 2-seed variances"
    )
  return (
    f"one seed per run: intervals resample each model's batch sizes, the same for all its "
    f"budgets ({answer['samples']} samples); seed noise is not measured"
  )


def power_method(answer: dict) -> str:
  """What 'detectable' means, with the run noise the simulations used ('' without them)."""
  if "sigma_run" not in answer:
    return ""
  return (
    "'Detectable' is the smallest |exponent| this design finds beyond its interval's "
    "half-width 80% of the time, from studies simulated with the measured a of every group, "
    f"the measured run noise (sigma {answer['sigma_run']:.3f} in log steps, a share "
    f"{answer['rho']:.2f} of its variance shared by a run's budgets), the same seeds, batch "
    "sizes, N and D."
  )


def answer_blocks(answer: dict, groups: list[dict], out: str, noise: dict | None = None) -> list:
  """The report's opening: the sentence, both exponents with intervals (Definition 1's CBS and,
  when given, B_noise = b / a), the coupled exponent, the power, the two views of CBS against N and
  D, and the (N, D) tables of both."""
  laws = [("CBS (Definition 1)", answer)] + ([("B_noise = b / a", noise)] if noise else [])
  rows = exponent_rows(laws)
  plot = answer_plots.cbs_slices(groups, answer, f"{out}/cbs_vs_n_and_d.png")
  blocks = [
    report_lib.heading("Answer: does the CBS scale with data or with model size?"),
    report_lib.paragraph(answer["sentence"]),
    report_lib.table(["law", "exponent", "95% bootstrap interval", "detectable"], rows),
    *sensitivity_blocks(laws),
    report_lib.paragraph(
      f"Joint fit log value = log c + alpha log N + beta log D over {answer['groups']} "
      "groups (N non-embedding parameters, D tokens), each group's value from its fit "
      f"of steps = a + b/B; {interval_method(answer)}. The coupled exponent is fitted along "
      f"the groups whose D/N ratio matches across model sizes. {power_method(answer)}"
    ),
    report_lib.image(
      plot, "CBS vs N at each D (left) and vs D at each N (right), with the joint law dashed"
    ),
  ]
  for label, key, ci in (
    ("CBS (fit, sequences)", "cbs", "cbs_ci"),
    ("B_noise = b / a (sequences)", "b_noise", "b_noise_ci"),
  ):
    blocks += [
      report_lib.paragraph(f"{label} with its 95% interval, for every (N, D):"),
      nd_table(groups, key, ci),
    ]
  return blocks


def nd_table(groups: list[dict], key: str, ci_key: str):
  """A table with one row per N and one column per D: value [interval]."""
  ns, ds = sorted({g["n_params"] for g in groups}), sorted({g["tokens"] for g in groups})
  cell = {(g["n_params"], g["tokens"]): g for g in groups}

  def text(g):
    if g is None or key not in g:
      return "-"
    lo, hi = g.get(ci_key) or (math.nan, math.nan)
    return f"{g[key]:.3g} [{lo:.3g}, {hi:.3g}]"

  return report_lib.table(
    ["N \\ D", *(_short(d) for d in ds)],
    [[_short(n), *(text(cell.get((n, d))) for d in ds)] for n in ns],
  )
