"""The sweep report's sections on runs whose batch size changes or is probed: adaptive against
constant batch-size schedules, and the local critical batch size of runs with probes (Merrill et
al. 2025)."""

import json
import os

from analysis import plots
from analysis import report as report_lib
from analysis import runs as runs_lib
from cbs.checkpoint import run_dir


def schedule_blocks(comparison: dict, all_runs: list[runs_lib.Run], metric: str, out: str) -> list:
  """Adaptive and constant batch-size schedules at equal tokens (`measure.adaptive_table`)."""
  return [
    report_lib.heading("Batch-size schedules"),
    report_lib.table(
      ["run", "schedule", "batch (first -> last)"]
      + [f"loss @ {t:,} tok" for t in comparison["tokens"]]
      + [f"steps @ {t:,} tok" for t in comparison["tokens"]],
      [
        [
          r["run"],
          r["schedule"],
          f"{r['initial_batch']} -> {r['final_batch']}",
          *r["losses"],
          *r["steps"],
        ]
        for r in comparison["rows"]
      ],
    ),
    report_lib.image(
      plots.schedules(all_runs, metric, os.path.join(out, "schedules.png")),
      "Batch size and eval loss of adaptive (solid) and constant (dashed) runs",
    ),
  ]


def probe_blocks(all_runs: list[runs_lib.Run], out: str) -> tuple[dict, list]:
  """The local-CBS probes of every run that has them: {run: probe result} and a section each."""
  probes, blocks = {}, []
  for i, r in enumerate(all_runs):
    path = os.path.join(r.workdir, run_dir.PROBES, run_dir.PROBE_RESULT)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      probes[r.name] = probe = json.load(f)
    blocks += [
      report_lib.heading(f"Local critical batch size: {r.name}"),
      report_lib.paragraph(
        f"Branches of {probe['branch_tokens']:,} tokens at k x B (lr x k^"
        f"{probe['lr_exponent']}); k* = largest k within {probe['eps']} of every "
        "smaller k (Merrill et al. 2025). The noise scale is the run's own online "
        "estimate B_simple (batch.gns_every or an adaptive schedule)."
      ),
      report_lib.table(
        ["tokens", "batch", "k*", "local CBS", "noise scale B_simple", "losses by k"],
        [
          [
            p["tokens"],
            p["batch"],
            p["k_star"],
            p["local_cbs"],
            p["grad_noise_scale"],
            " ".join(f"{k:g}:{v:.4f}" for k, v in zip(p["k"], p["losses"])),
          ]
          for p in probe["points"]
        ],
      ),
      report_lib.image(
        plots.local_cbs(r, probe, os.path.join(out, f"local_cbs_{i}.png")),
        "Local CBS (probes), online noise scale and the run's batch size",
      ),
    ]
  return probes, blocks
