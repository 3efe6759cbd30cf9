"""The CBS measurement sweep of the 151M model at the Chinchilla budget: batch size x lr x beta2."""


def get_sweep() -> dict:
  return {
      "config": "configs/cbs_paper.py:151m",
      "fixed": {"data.tfds_data_dir": "gs://BUCKET/tensorflow_datasets"},
      "axes": {
          "batch.size": [64, 128, 256, 512, 1024, 2048, 4096],
          "optimizer.lr": [1e-3, 3.16e-3, 1e-2],
          "optimizer.b2": [0.95, 0.999],
      },
  }
