"""The held-out set's size: `eval.tokens` rounded up to whole eval batches, the same on every
source (one formula, `stream.eval_examples`)."""

import json

import pytest

from cbs import data as data_lib
from cbs.data import stream as stream_lib
from configs import tiny


def sized(tokens: int, batch_size: int, seq_len: int = 32):
  config = tiny.get_config()
  config.data.seq_len = seq_len
  config.eval.tokens, config.eval.batch_size = tokens, batch_size
  return config


@pytest.mark.parametrize(
  ("tokens", "batch_size", "examples"),
  [
    (1, 4, 4),
    (0, 4, 4),
    (128, 4, 4),
    (129, 4, 8),
    (32 * 12, 4, 12),
    (32 * 12 + 1, 5, 15),
  ],
)
def test_eval_tokens_round_up_to_whole_eval_batches(tokens, batch_size, examples):
  assert stream_lib.eval_examples(sized(tokens, batch_size)) == examples  # seq_len 32


def _held_out_rows(config) -> int:
  return sum(len(batch["inputs"]) for batch in data_lib.make(config, 0, 1).eval_batches)


def test_synthetic_and_text_sources_hold_out_the_same_number_of_examples(tmp_path):
  config = sized(32 * 9, 4)  # 9 sequences -> 3 batches of 4
  text = sized(32 * 9, 4)
  train, held_out = tmp_path / "train.jsonl", tmp_path / "held_out.jsonl"
  train.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(40)))
  held_out.write_text(
    "".join(json.dumps({"text": f"held out {i} " * 20}) + "\n" for i in range(40))
  )
  text.data.update(
    dict(source="text_files", files=str(train), eval_files=str(held_out), vocab="byte", prefetch=0)
  )
  assert _held_out_rows(config) == _held_out_rows(text) == 12
