"""Every test process sees 8 fake CPU devices, so sharded meshes are tested without accelerators.

The flag must be set before JAX initialises its backend; tests choose their mesh explicitly
(`mesh.data`, `mesh.model`), so single-device references use one of the eight.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
