"""Run directories with known loss curves, so the analysis can be checked against closed forms.

A run at batch B follows loss(step) = floor + scale / (1 + step / (1 + b_noise / B)) / s0: reaching a
loss L takes S0(L) (1 + b_noise / B) steps, exactly McCandlish's law with a = S0(L), b = a b_noise.
"""

import json
import pathlib

FLOOR, SCALE, S0 = 2.0, 3.0, 50.0
SEQ_LEN = 64
N_PARAMS = 100_000


def loss(step: float, batch: int, b_noise: float) -> float:
  return FLOOR + SCALE / (1 + step / S0 / (1 + b_noise / batch))


def steps_to(target: float, batch: int, b_noise: float) -> float:
  """Closed-form inverse of `loss`."""
  return S0 * (1 + b_noise / batch) * (SCALE / (target - FLOOR) - 1)


def write_run(
  root: pathlib.Path,
  name: str,
  batch: int,
  b_noise: float,
  steps: int,
  budget: int,
  eval_every: int = 10,
  lr: float = 1e-3,
  n_params: int = N_PARAMS,
  schedule: str = "constant",
  batch_at=None,
  stop_loss: float = 0.0,
  seq_len: int = SEQ_LEN,
) -> pathlib.Path:
  """A finished run dir with train records every step and evals every `eval_every` steps."""
  workdir = root / name
  workdir.mkdir(parents=True)
  config = {
    "train_tokens": steps * batch * seq_len,
    "data_budget_tokens": budget,
    "model": {"d_model": n_params},
    "data": {"seq_len": seq_len},
    "batch": {"size": batch, "schedule": schedule},
    "optimizer": {"lr": lr},
    "train": {"stop_loss": stop_loss},
  }
  (workdir / "config.json").write_text(
    json.dumps({"config": config, "params": {"non_embedding": n_params, "total": n_params}})
  )
  lines, tokens = [], 0
  for step in range(1, steps + 1):
    size = batch_at(step) if batch_at else batch
    tokens += size * seq_len
    lines.append(
      {"step": step, "tokens": tokens, "loss": loss(step, size, b_noise), "batch_size": size}
    )
    if step % eval_every == 0:
      value = loss(step, size, b_noise)
      lines.append(
        {"step": step, "tokens": tokens, "eval_loss": value + 0.01, "eval_loss_ewa_0.9": value}
      )
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (workdir / "done.json").write_text(json.dumps({"step": steps, "tokens": tokens}))
  return workdir


def write_manifest(root: pathlib.Path, names: list[str]) -> None:
  (root / "manifest.json").write_text(
    json.dumps({"sweep": "fake", "runs": [{"name": n, "workdir": str(root / n)} for n in names]})
  )


def write_target_run(
  root: pathlib.Path,
  name: str,
  batch: int,
  reach: int,
  target: float,
  budget: int,
  steps: int,
  eval_every: int,
  lr: float = 1e-3,
  stop_loss: float = 0.0,
  seq_len: int = 512,
) -> pathlib.Path:
  """A finished run whose EWA eval loss is exactly `target` at step `reach` (loss = FLOOR + SCALE /
  (1 + step / k)), evaluated every `eval_every` steps for `steps` steps, or until an eval at or
  below `stop_loss` as the trainer stops; its config holds what the sweep driver and analysis read.
  """
  workdir = root / name
  workdir.mkdir(parents=True)
  k = reach / (SCALE / (target - FLOOR) - 1)
  lines = []
  for step in range(eval_every, steps + 1, eval_every):
    value = FLOOR + SCALE / (1 + step / k)
    tokens = step * batch * seq_len
    lines += [
      {"step": step, "tokens": tokens, "loss": value + 0.02, "batch_size": batch},
      {"step": step, "tokens": tokens, "eval_loss": value + 0.01, "eval_loss_ewa_0.995": value},
    ]
    if value <= stop_loss:
      break
  config = {
    "train_tokens": steps * batch * seq_len,
    "data_budget_tokens": budget,
    "model": {"d_model": N_PARAMS},
    "data": {"seq_len": seq_len},
    "batch": {"size": batch, "schedule": "constant"},
    "optimizer": {"lr": lr},
    "train": {"stop_loss": stop_loss},
    "eval": {"every_tokens": eval_every * batch * seq_len},
  }
  (workdir / "config.json").write_text(
    json.dumps({"config": config, "params": {"non_embedding": N_PARAMS, "total": N_PARAMS}})
  )
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (workdir / "done.json").write_text(json.dumps({"step": lines[-1]["step"]}))
  return workdir
