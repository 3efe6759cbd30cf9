"""The gradient-noise sums a statistics step returns and the batch-size controller reads.

All are float32 scalars over the step's M groups (means over groups of per-group quantities), taken
before clipping. The plain sums serve the norm test and the noise scale; the deviation sums exist
only for the "full" statistics (inner-product and orthogonality tests). The estimators that turn
them into sizes are in `cbs.batching.statistics`.
"""

from typing import Any
from typing import NamedTuple


class NoiseSums(NamedTuple):
  """|g|^2 of the step's mean gradient g and the means over groups j of the group gradients G_j."""

  grad_sq_norm: Any  # |g|^2
  group_sq_norm_mean: Any  # mean |G_j|^2
  group_dev_sq_norm_mean: Any = None  # mean |G_j - g|^2 ("full" only)
  group_dot_dev_mean: Any = None  # mean (G_j - g) . g ("full" only)
  group_dot_dev_sq_mean: Any = None  # mean ((G_j - g) . g)^2 ("full" only)

  def as_floats(self) -> "NoiseSums":
    """The sums as host floats (None stays None), once read from the device."""
    return NoiseSums(*(None if v is None else float(v) for v in self))
