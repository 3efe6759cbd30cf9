"""Parallelism: the device mesh, logical-axis rules and placement, and the distributed start of multi-host runs."""
