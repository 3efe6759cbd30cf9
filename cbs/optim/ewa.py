"""Exponential weight averages (EWA) of the parameters, bias-corrected at evaluation.

`xi_t = tau_t xi_{t-1} + (1 - tau_t) theta_t` from `xi_0 = 0`; evaluation uses
`xi_t / (1 - prod_i tau_i)`, which for a constant tau is the `1 - tau^t` correction of Zhang et al.
2024 (arXiv 2410.21676). An average is given either as a per-step tau (`ewa.decays`) or as a horizon in
tokens (`ewa.horizons_tokens`, tau = exp(-tokens_per_step / horizon)); the second averages over the
same number of tokens whatever the batch size, so it stays meaningful when the batch grows. The taus
are computed on the host and passed into the compiled step. This module averages; it never decides
which weights are evaluated.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def names(ewa_cfg: ml_collections.ConfigDict) -> list[str]:
  """One name per average: the tau as written ("0.999") or "h" + horizon tokens ("h1000000")."""
  for tau in ewa_cfg.decays:
    if not 0.0 <= tau < 1.0:
      raise ValueError(f"ewa.decays has {tau!r}; each decay must be in [0, 1)")
  for horizon in ewa_cfg.horizons_tokens:
    if horizon <= 0:
      raise ValueError(f"ewa.horizons_tokens has {horizon!r}; each horizon must be > 0 tokens")
  return [f"{tau}" for tau in ewa_cfg.decays] + [f"h{int(h)}" for h in ewa_cfg.horizons_tokens]


def taus(ewa_cfg: ml_collections.ConfigDict, tokens_per_step: int) -> dict[str, np.float32]:
  """This step's decay of each average, by name (a dict, because pytrees reorder dict keys)."""
  per_step = [float(tau) for tau in ewa_cfg.decays]
  horizon = [float(np.exp(-tokens_per_step / h)) for h in ewa_cfg.horizons_tokens]
  return {name: np.float32(tau) for name, tau in zip(names(ewa_cfg), per_step + horizon)}


def init(params, ewa_cfg: ml_collections.ConfigDict) -> dict:
  """Zero means shaped (and, through their metadata, sharded) like the parameters."""
  averages = names(ewa_cfg)
  return {
    "mean": {name: jax.tree.map(jnp.zeros_like, params) for name in averages},
    "decay_product": {name: jnp.ones((), jnp.float32) for name in averages},
  }


def update(ewa_state: dict, params, taus_by_name: dict[str, jax.Array]) -> dict:
  """Folds this step's parameters into every average."""
  mean, product = {}, {}
  for name, tau in taus_by_name.items():
    mean[name] = jax.tree.map(
      lambda xi, p: tau * xi + (1.0 - tau) * p.astype(xi.dtype), ewa_state["mean"][name], params
    )
    product[name] = ewa_state["decay_product"][name] * tau
  return {"mean": mean, "decay_product": product}


def averaged_params(ewa_state: dict, name: str):
  """The bias-corrected average; defined once at least one step has been averaged."""
  scale = 1.0 / (1.0 - ewa_state["decay_product"][name])
  return jax.tree.map(lambda xi: xi * scale, ewa_state["mean"][name])
