"""Two jax.distributed processes on localhost (4 CPU devices each) train like one 8-device process.

The two processes stop after step 2 and resume (tests/multiprocess_worker.py).
"""

import pathlib
import socket
import subprocess
import sys

import numpy as np

from cbs import metrics
from cbs import train
from configs import tiny

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config():
  c = tiny.get_config()
  c.compile_cache_dir = ""
  c.mesh.data = 8
  c.model.mlp_dim = 128
  c.train_tokens = 5 * 32 * 64
  c.eval.every_tokens, c.eval.tokens, c.log.every_steps = 0, 4096, 1
  return c


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  port = str(free_port())
  workers = [subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", str(i), port,
                               str(tmp_path / "two")], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
  errors = [w.communicate(timeout=300)[1] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
  train.train_and_evaluate(config(), str(tmp_path / "one"))
  for key in ("loss", "eval_loss"):
    two, one = ([r[key] for r in metrics.read_records(tmp_path / d) if key in r]
                for d in ("two", "one"))
    assert len(two) == len(one) > 0
    np.testing.assert_allclose(two, one, rtol=2e-5)
