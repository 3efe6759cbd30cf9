"""Every test process sees 8 fake CPU devices, so sharded meshes are tested without accelerators.

The flag must be set before JAX initialises its backend; tests choose their mesh explicitly
(`mesh.data`, `mesh.model`), so single-device references use one of the eight. Command-line
runs may share the session's compile cache.
"""

import os

import pytest

os.environ["XLA_FLAGS"] = " ".join(
  [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> str:
  """A persistent XLA cache shared by a session's command-line runs (`compile_cache_dir`), as a
  user's runs share theirs: a run compiles only what no earlier run of the same shapes did."""
  return str(tmp_path_factory.mktemp("xla_cache"))
