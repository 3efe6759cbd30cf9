"""A small CBS sweep of the tiny paper config on CPU: batch sizes x learning rates."""


def get_sweep() -> dict:
  return {
    "config": "configs/cbs_paper.py:tiny",
    "fixed": {
      "train_tokens": 200_000,
      "data_budget_tokens": 200_000,
      "schedule.warmup_tokens": 20_000,
      "mesh.data": 1,
    },
    "axes": {"batch.size": [16, 32, 64, 128], "optimizer.lr": [1e-3, 3.16e-3]},
  }
