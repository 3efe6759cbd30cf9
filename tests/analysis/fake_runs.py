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


def write_run(root: pathlib.Path, name: str, batch: int, b_noise: float, steps: int,
              budget: int, eval_every: int = 10, lr: float = 1e-3, n_params: int = N_PARAMS,
              schedule: str = "constant", batch_at=None, stop_loss: float = 0.0) -> pathlib.Path:
  """A finished run dir with train records every step and evals every `eval_every` steps."""
  workdir = root / name
  workdir.mkdir(parents=True)
  config = {"train_tokens": steps * batch * SEQ_LEN, "data_budget_tokens": budget,
            "model": {"d_model": n_params}, "data": {"seq_len": SEQ_LEN},
            "batch": {"size": batch, "schedule": schedule}, "optimizer": {"lr": lr},
            "train": {"stop_loss": stop_loss}}
  (workdir / "config.json").write_text(json.dumps(
      {"config": config, "params": {"non_embedding": n_params, "total": n_params}}))
  lines, tokens = [], 0
  for step in range(1, steps + 1):
    size = batch_at(step) if batch_at else batch
    tokens += size * SEQ_LEN
    lines.append({"step": step, "tokens": tokens, "loss": loss(step, size, b_noise),
                  "batch_size": size})
    if step % eval_every == 0:
      value = loss(step, size, b_noise)
      lines.append({"step": step, "tokens": tokens, "eval_loss": value + 0.01,
                    "eval_loss_ewa_0.9": value})
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (workdir / "done.json").write_text(json.dumps({"step": steps, "tokens": tokens}))
  return workdir


def write_manifest(root: pathlib.Path, names: list[str]) -> None:
  (root / "manifest.json").write_text(json.dumps(
      {"sweep": "fake", "runs": [{"name": n, "workdir": str(root / n)} for n in names]}))
