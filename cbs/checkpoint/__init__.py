"""The run directory as the run's record: atomic checkpoints and restore, the one-writer lock."""
