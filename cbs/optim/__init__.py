"""Optimisation: optimizers, learning-rate schedules (functions of tokens seen) and exponential weight averaging."""
