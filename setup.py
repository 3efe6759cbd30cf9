"""Installs `cbs` (the training library) and `analysis` (reading run directories)."""

import setuptools

setuptools.setup(
  name="cbs",
  version="0.1.0",
  description="JAX/Flax pretraining for studying and exploiting the critical batch size.",
  python_requires=">=3.11",
  packages=setuptools.find_packages(
    include=[
      "cbs",
      "cbs.*",
      "configs",
      "analysis",
      "analysis.*",
      "launch",
      "launch.*",
      "studies",
      "studies.*",
    ]
  ),
  install_requires=[
    "jax>=0.7.0",
    "flax>=0.12.0",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11.20",
    "ml-collections>=1.0.0",
    "clu>=0.0.12",
    "tensorboard>=2.17",
    "tensorflow-datasets>=4.9.6",
    "seqio>=0.0.19",
    "etils[epath]>=1.7",
    "importlib_resources>=6.0",  # TFDS needs it to prepare datasets
    "sentencepiece>=0.2.0",
    "grain>=0.2.12",  # data loading: iterators with checkpointable state, read-ahead
    "array-record>=0.7",  # prepared shards (random access)
    "tokenizers>=0.20",  # Hugging Face tokenizer.json vocabularies
    "pyarrow>=15",  # Parquet corpora
    "tqdm>=4.66",  # progress of cbs.data.prepare
    "numpy>=1.26",
    "matplotlib>=3.8",  # analysis plots
  ],
  extras_require={
    "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.6"],
    "tpu": ["jax[tpu]"],  # libtpu: runs on TPU VMs, and compiles for TPU slices anywhere
  },
)
