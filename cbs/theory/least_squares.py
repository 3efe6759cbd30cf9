"""SGD and Adam on high-dimensional linear regression with power-law spectra (a CBS testbed).

Features x ~ N(0, H) with H = diag(i^-a), targets y = <w*, x> + N(0, sigma^2) with
lambda_i w*_i^2 = i^-b (mode i carries a power law of the signal). One-pass SGD at batch B and
learning rate eta; the excess risk R(w) = sum_i lambda_i (w_i - w*_i)^2 is exact, so no held-out
set is needed. Everything is vectorised over learning rates x seeds and compiled once per batch
size, so a batch x learning-rate x data-size grid runs in about a minute on a CPU.

For Gaussian features the expected dynamics close on the diagonal m_i = E[(w_i - w*_i)^2]:
  m_i <- (1 - eta lambda_i)^2 m_i + (eta^2 / B) lambda_i (lambda_i m_i + R + sigma^2),
(from E[x x^T M x x^T] = 2 H M H + tr(HM) H), which `expected_risk` iterates: the closed-form
expectation that the simulation is checked against.

Prediction of the CBS growth (a scaling argument on that recursion, noise-dominated regime): the
learning-rate noise floor eta sigma^2 tr(H) / (2B) must stay below the target risk R_T, so below
the CBS the usable eta grows linearly with B until it hits the stability limit eta_max: B* ~
eta_max sigma^2 tr(H) / (2 R_T). The reference run's best risk after D samples balances the bias
(eta t)^-((b-1)/a) against that floor, giving R_T ~ D^-(b-1)/(a+b-1); hence
  B* ~ D^gamma, gamma = (b - 1) / (a + b - 1).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Problem:
  dim: int = 512
  a: float = 2.0  # spectrum: lambda_i = i^-a
  b: float = 2.0  # signal: lambda_i w*_i^2 = i^-b (b > 1: finite initial risk)
  noise: float = 1.0  # label noise standard deviation sigma

  def spectrum(self) -> np.ndarray:
    return np.arange(1, self.dim + 1, dtype=np.float64) ** -self.a

  def target(self) -> np.ndarray:
    i = np.arange(1, self.dim + 1, dtype=np.float64)
    return np.sqrt(i**-self.b / self.spectrum())

  def predicted_exponent(self) -> float:
    return (self.b - 1) / (self.a + self.b - 1)


def expected_risk(p: Problem, lrs, batch: int, steps: int) -> np.ndarray:
  """E[R] after 1..steps SGD steps from w = 0 for each lr: [len(lrs), steps] (float64 recursion)."""
  lam = p.spectrum()
  lrs = np.asarray(lrs, np.float64)[:, None]
  m = np.tile(p.target() ** 2, (lrs.shape[0], 1))
  out = np.empty((lrs.shape[0], steps))
  decay, gain = (1 - lrs * lam) ** 2 + lrs**2 / batch * lam**2, lrs**2 / batch * lam
  with np.errstate(over="ignore", invalid="ignore"):  # unstable learning rates diverge: inf
    for t in range(steps):
      risk = m @ lam
      m = decay * m + gain * (risk + p.noise**2)[:, None]
      out[:, t] = m @ lam
  return np.where(np.isfinite(out), out, np.inf)


@functools.partial(
  jax.jit, static_argnames=("dim", "batch", "steps", "optimizer", "b1", "b2", "ewa")
)
def _simulate(
  lam,
  w_star,
  noise,
  lrs,
  keys,
  *,
  dim: int,
  batch: int,
  steps: int,
  optimizer: str,
  b1: float,
  b2: float,
  ewa: float,
):
  """Risk per step (and of the EWA weights) for each (lr, key): shape [lrs, keys, steps]."""

  def one(lr, key):
    def step(carry, key_t):
      w, m, v, avg, t = carry
      kx, ke = jax.random.split(key_t)
      x = jax.random.normal(kx, (batch, dim)) * jnp.sqrt(lam)
      y = x @ w_star + noise * jax.random.normal(ke, (batch,))
      g = x.T @ (x @ w - y) / batch
      if optimizer == "sgd":
        w = w - lr * g
      else:  # adam with bias correction
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + 1e-8)
      avg = ewa * avg + (1 - ewa) * w
      averaged = avg / (1 - ewa**t) if ewa > 0 else w
      risks = jnp.stack([lam @ (w - w_star) ** 2, lam @ (averaged - w_star) ** 2])
      return (w, m, v, avg, t + 1), risks

    zeros = jnp.zeros(dim)
    _, risks = jax.lax.scan(step, (zeros, zeros, zeros, zeros, 1.0), jax.random.split(key, steps))
    return risks.T

  return jax.vmap(lambda lr: jax.vmap(lambda k: one(lr, k))(keys))(lrs)


def simulate(
  p: Problem,
  lrs,
  batch: int,
  steps: int,
  seeds: int = 4,
  seed: int = 0,
  optimizer: str = "sgd",
  b1: float = 0.9,
  b2: float = 0.99,
  ewa: float = 0.0,
) -> np.ndarray:
  """Mean risk over seeds per (lr, step): [len(lrs), steps]; with ewa > 0, of the EWA weights."""
  if optimizer not in ("sgd", "adam"):
    raise ValueError(f"optimizer={optimizer!r} is not one of: sgd, adam")
  keys = jax.random.split(jax.random.key(seed), seeds)
  risks = _simulate(
    jnp.asarray(p.spectrum(), jnp.float32),
    jnp.asarray(p.target(), jnp.float32),
    p.noise,
    jnp.asarray(lrs, jnp.float32),
    keys,
    dim=p.dim,
    batch=batch,
    steps=steps,
    optimizer=optimizer,
    b1=b1,
    b2=b2,
    ewa=ewa,
  )
  return np.asarray(risks[:, :, 1 if ewa > 0 else 0].mean(axis=1), np.float64)


def smooth(curves: np.ndarray, width: float = 0.1) -> np.ndarray:
  """Mean of log-risk over the window [t (1 - width/2), t (1 + width/2)] of every step t.

  The first crossing of a noisy curve comes early by chance, more so at small batches (noisier
  steps), which would bias the CBS down; a window proportional to t removes that at no lag.
  """
  with np.errstate(divide="ignore", invalid="ignore"):  # diverged curves stay inf / nan
    logs = np.log(curves)
  sums = np.concatenate([np.zeros((logs.shape[0], 1)), np.cumsum(logs, axis=1)], axis=1)
  t = np.arange(logs.shape[1])
  lo = np.maximum(0, (t * (1 - width / 2)).astype(int))
  hi = np.minimum(logs.shape[1], (t * (1 + width / 2)).astype(int) + 1)
  with np.errstate(invalid="ignore"):
    return np.exp((sums[:, hi] - sums[:, lo]) / (hi - lo))
