"""The transformer's pieces in float64 numpy, written independently of `cbs.models`: what the model
tests compare the JAX layers against."""

import math

import numpy as np


def norm(x, scale, kind: str, eps: float = 1e-5, axes=(-1,)):
  """LayerNorm (mean removed) or RMSNorm over `axes`, times `scale`."""
  if kind == "layernorm":
    x = x - x.mean(axes, keepdims=True)
  return x / np.sqrt((x * x).mean(axes, keepdims=True) + eps) * scale


def rope(x_BxLxHxK, theta: float = 10_000.0):
  """Rotary position embedding, the two halves of each head rotated by position x frequency."""
  length, half = x_BxLxHxK.shape[1], x_BxLxHxK.shape[-1] // 2
  angle = np.arange(length)[:, None] * theta ** (-np.arange(half) / half)[None, :]
  cos, sin = np.cos(angle)[None, :, None, :], np.sin(angle)[None, :, None, :]
  x1, x2 = x_BxLxHxK[..., :half], x_BxLxHxK[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def causal_attention(q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, scale: float):
  """Causal softmax attention, each of the G key / value heads repeated for H / G query heads."""
  repeat = q_BxLxHxK.shape[2] // k_BxLxGxK.shape[2]
  k, v = np.repeat(k_BxLxGxK, repeat, axis=2), np.repeat(v_BxLxGxK, repeat, axis=2)
  scores = np.einsum("blhk,bmhk->bhlm", q_BxLxHxK, k) * scale
  length = q_BxLxHxK.shape[1]
  scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhlm,bmhk->blhk", probs, v)


def gelu(x):
  """The exact (erf) GeLU, the paper's."""
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
