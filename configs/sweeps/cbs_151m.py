"""The CBS measurement of the 151M model at the Chinchilla budget in two phases (launch.two_phase).

Phase 1 trains batch 256 (the paper's B_opt) with every learning rate and b2 to D; their best loss
after D tokens, over the raw weights and every EWA decay, is the target. Phase 2 trains every other
batch size until it reaches the target, within 8 D (batch 16384 needs about 6.3 D). Append `,xK` to
the config's size to measure at K times the Chinchilla budget.
"""


def get_sweep() -> dict:
  return {
    "config": "configs/cbs_paper.py:151m",
    "fixed": {"data.tfds_data_dir": "gs://BUCKET/tensorflow_datasets"},
    "axes": {
      "batch.size": [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384],
      # half-decades around the released 3.16e-3; widen it where a batch's best lr is an end
      "optimizer.lr": [1e-3, 3.16e-3, 1e-2],
      "optimizer.b2": [0.95, 0.99, 0.995, 0.999],
    },
    "two_phase": {"b_opt": 256, "cap": 8},
  }
