"""Attention implementations: the einsum form against numpy and XLA's, and how `auto` chooses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cbs.config import validation
from cbs.models import layers
from configs import tiny
from tests.models import numpy_reference as reference


@pytest.mark.parametrize("heads,groups,scale", [(4, 4, None), (4, 2, None), (6, 1, 0.3)])
def test_einsum_and_xla_attention_match_numpy(heads, groups, scale):
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (2, 9, heads, 8))
  k, v = (jax.random.normal(key, (2, 9, groups, 8)) for key in keys[1:])
  expected = reference.causal_attention(
    *(np.asarray(t, np.float64) for t in (q, k, v)), 1 / np.sqrt(8) if scale is None else scale
  )
  for implementation in ("einsum", "xla"):
    got = layers.attend(q, k, v, scale, implementation)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  half = layers.attend(*(t.astype(jnp.bfloat16) for t in (q, k, v)), scale, "einsum")
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(half.astype(jnp.float32), expected, atol=0.05)


@pytest.mark.parametrize(
  "requested,platform,dtype,expected",
  [
    ("auto", "gpu", jnp.bfloat16, "cudnn"),
    ("auto", "gpu", jnp.float32, "einsum"),
    ("auto", "cpu", jnp.bfloat16, "einsum"),
    ("auto", "tpu", jnp.bfloat16, "einsum"),
    ("xla", "gpu", jnp.bfloat16, "xla"),
    ("einsum", "gpu", jnp.bfloat16, "einsum"),
  ],
)
def test_auto_takes_cudnn_flash_attention_on_gpus_in_16_bits(requested, platform, dtype, expected):
  assert layers.attention_implementation(requested, platform, dtype) == expected


@pytest.mark.parametrize(
  "attention,dtype,message",
  [
    ("flash", "float32", "model.attention='flash' is not one of: auto, einsum, xla, cudnn"),
    ("cudnn", "bfloat16", "model.attention='cudnn' needs a GPU \\(this backend is cpu\\)"),
  ],
)
def test_bad_attention_choices_are_named(attention, dtype, message):
  config = tiny.get_config()
  config.model.attention, config.model.dtype = attention, dtype
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config, num_devices=1)
