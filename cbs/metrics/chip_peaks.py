"""Published dense bf16 peak FLOP/s per chip: the one table MFU and the compile check read.

MFU (`flops.device_peak_flops`) looks a device up by the start of its `device_kind`; the compile
check (`cbs.tpu.topology.CHIPS`) by TPU generation. Both read the figures here, so a corrected or new
chip is written once. Free of JAX, so the compile check can read it before libtpu is set up.
"""

# Cloud TPU system architecture pages (https://cloud.google.com/tpu/docs/v4, .../v5e, .../v5p,
# .../v6e), bf16 per chip, by the generation names `--topology` takes.
TPU_GENERATIONS = {"v4": 275e12, "v5e": 197e12, "v5p": 459e12, "v6e": 918e12}

# By the start of `device.device_kind`, in the order they are tried: a longer kind before a kind
# it starts with ("TPU v5 lite" before "TPU v5").
BY_DEVICE_KIND = {
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA GH200": 989e12,
  "NVIDIA A100": 312e12,
  "NVIDIA L4": 121e12,
  "TPU v4": TPU_GENERATIONS["v4"],
  "TPU v5 lite": TPU_GENERATIONS["v5e"],
  "TPU v5e": TPU_GENERATIONS["v5e"],
  "TPU v5p": TPU_GENERATIONS["v5p"],
  "TPU v5": TPU_GENERATIONS["v5p"],
  "TPU v6 lite": TPU_GENERATIONS["v6e"],
  "TPU v6e": TPU_GENERATIONS["v6e"],
}


def of_device_kind(device_kind: str) -> float | None:
  """The peak of the first known chip `device_kind` starts with, or None for an unknown chip."""
  for name, peak in BY_DEVICE_KIND.items():
    if device_kind.startswith(name):
      return peak
  return None
