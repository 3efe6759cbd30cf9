"""Launching runs: sweeps expanded into workdirs and started on this machine, local GPUs, TPU pods or Slurm."""
