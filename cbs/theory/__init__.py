"""Fast testbeds for critical-batch-size hypotheses (minutes on a CPU)."""
