"""The one chip-peak table: MFU's device-kind lookup and the compile check agree on each TPU."""

import pytest

from cbs.metrics import chip_peaks
from cbs.tpu import topology


@pytest.mark.parametrize(
  ("device_kind", "peak"),
  [
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12),
    ("cpu", None),
    ("TPU v7", None),
  ],
)
def test_a_device_kind_finds_its_published_peak(device_kind, peak):
  assert chip_peaks.of_device_kind(device_kind) == peak


def test_the_compile_check_reads_the_same_peak_as_mfu():
  kinds = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5p", "v6e": "TPU v6 lite"}
  assert set(kinds) == set(topology.CHIPS)
  for generation, chip in topology.CHIPS.items():
    assert chip.peak_flops == chip_peaks.of_device_kind(kinds[generation])
