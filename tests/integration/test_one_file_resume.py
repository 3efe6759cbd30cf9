"""A two-process run on a corpus in one .jsonl file (both hosts read pieces of it, their examples
mixed in blocks), killed with SIGKILL mid-block and started again, continues bit for bit."""

import json

from tests.data import corpus
from tests.helpers import STEP_TOKENS
from tests.helpers import comparable
from tests.helpers import last_step
from tests.integration.test_multiprocess import BASE
from tests.integration.test_multiprocess import finish
from tests.integration.test_multiprocess import kill_when_paused
from tests.integration.test_multiprocess import start


def test_a_killed_two_process_run_on_one_file_resumes_bit_for_bit(tmp_path):
  train, held_out = tmp_path / "corpus.jsonl", tmp_path / "held_out.jsonl"
  train.write_text("".join(json.dumps({"text": corpus.document(i)}) + "\n" for i in range(600)))
  held_out.write_text(
    "".join(json.dumps({"text": corpus.document(i)}) + "\n" for i in range(600, 640))
  )
  # 2 x 100 examples per block; the checkpoint after step 2 (2 x 32 examples) lies mid-block.
  overrides = {
    **BASE,
    "data.source": "text_files",
    "data.files": str(train),
    "data.eval_files": str(held_out),
    "data.shuffle_buffer": 100,
    "train_tokens": 6 * STEP_TOKENS,
    "checkpoint.every_tokens": 2 * STEP_TOKENS,
    "eval.every_tokens": 3 * STEP_TOKENS,
  }
  finish(start(tmp_path / "whole", overrides))
  killed = start(tmp_path / "killed", overrides, pause_after_saves=1)
  step = kill_when_paused(killed, tmp_path / "killed")
  assert step == 2 and not (tmp_path / "killed" / "done.json").exists()
  assert last_step(tmp_path / "killed") == step
  positions = [
    json.loads(
      (tmp_path / "killed" / "checkpoints" / "2" / "data" / f"process_{i}-of-2.json").read_text()
    )
    for i in range(2)
  ]
  assert [p["handed"] for p in positions] == [32, 32], positions  # each host mid-block
  logs = finish(start(tmp_path / "killed", overrides))
  whole, resumed = comparable(tmp_path / "whole"), comparable(tmp_path / "killed")
  for log in logs:
    assert f"resumed from step {step} (" in log
  assert resumed == whole and whole[-1]["step"] == 6  # every train and eval record, bit for bit
  assert any("eval_loss" in r for r in whole)
