"""How a run of a sweep ended, kept in its workdir so every backend and every rerun agree.

`done.json` (written by the trainer) means finished; `failed.json` (written here: the last line of
the reason and the exit code) means failed; a workdir holding a run without either is `started`
(still running, or preempted: it exited 0 before its end, and running it again resumes it); an
empty one is `pending`. Reruns skip finished and failed runs.

Remote backends (tpu, slurm) wrap each command so that the failure is recorded where the run ran:
`python -m launch.outcome --workdir=DIR -- python -m cbs.main ...` runs the command, passes its
output through, records a failure and exits with 1 if the run failed.
"""

import json
import signal
import subprocess
import sys

from etils import epath

from cbs.checkpoint import run_dir

STATUSES = ("pending", "started", "finished", "failed")


def status(workdir: epath.Path) -> str:
  if (workdir / run_dir.FAILED).exists():
    return "failed"
  if (workdir / run_dir.DONE).exists():
    return "finished"
  return "started" if run_dir.has_run(workdir) else "pending"


def is_settled(workdir: epath.Path) -> bool:
  """Finished or failed: a rerun skips it (a failed run only with --retry_failed)."""
  return status(workdir) in ("finished", "failed")


def failure(workdir: epath.Path) -> dict:
  """The recorded `{"reason", "exit_code"}` of a failed run ({} if it has not failed)."""
  path = workdir / run_dir.FAILED
  return json.loads(path.read_text()) if path.exists() else {}


def record_failure(workdir: epath.Path, reason: str, exit_code: int) -> None:
  lines = [line for line in reason.strip().splitlines() if line.strip()]
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / run_dir.FAILED).write_text(
    json.dumps({"reason": lines[-1].strip() if lines else "no output", "exit_code": exit_code})
  )


def clear_failure(workdir: epath.Path) -> None:
  (workdir / run_dir.FAILED).unlink(missing_ok=True)


def _exit_reason(code: int) -> str:
  if code < 0:  # killed by a signal: SIGKILL is usually the out-of-memory killer
    return f"killed by {signal.Signals(-code).name} (exit code {code})"
  return f"exit code {code}"


def attempt(command: list[str], workdir: epath.Path, env: dict | None = None) -> str:
  """Runs `command`, echoing its output, and returns how it ended: finished | failed | started.

  A non-zero exit records `failed.json` with the last line the command wrote to stderr (the
  trainer's one-line error: divergence, bad config, a crash's exception) or the exit signal.
  """
  process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, bufsize=1)
  last = ""
  for line in process.stderr:
    sys.stderr.write(line)
    if line.strip():
      last = line
  code = process.wait()
  if code != 0:
    if code < 0 or not last:
      last = "; ".join(filter(None, [last.strip(), _exit_reason(code)]))
    record_failure(workdir, last, code)
  return status(workdir)


def main(argv: list[str]) -> int:
  if len(argv) < 4 or not argv[1].startswith("--workdir=") or argv[2] != "--":
    print("usage: python -m launch.outcome --workdir=DIR -- COMMAND ...", file=sys.stderr)
    return 2
  workdir = argv[1].removeprefix("--workdir=")
  return 1 if attempt(argv[3:], epath.Path(workdir)) == "failed" else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
