"""muP coordinate check: `python -m analysis.coord_check [--out DIR]`.

Trains the paper model at several widths for a few Adam steps from the same data and reports the
RMS change of the last hidden state (the residual stream before the final norm) and of the
logits. Under muP (`model.param=mup`) the hidden change stays of the same size as width grows,
which is what lets hyper-parameters (and the CBS argument of Zhang et al. 2024) transfer across
widths; under the standard parameterization it grows with width.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp

from cbs import models
from cbs.optim import optimizers as optim
from configs import base

WIDTHS = (64, 128, 256, 512, 1024)
VOCAB = 64


def update_sizes(
  param: str, width: int, steps: int = 3, lr: float = 1e-2, base_width: int = 64
) -> dict[str, float]:
  """RMS change of the last hidden state and of the logits after `steps` Adam steps."""
  from flax import nnx  # noqa: PLC0415

  c = base.get_config()
  c.model.update(
    dict(
      name="paper",
      num_layers=2,
      d_model=width,
      num_heads=width // 16,
      param=param,
      base_width=base_width,
    )
  )
  c.optimizer.update(dict(name="adam", clip=0.0, lr=lr))
  model = models.build_model(c.model, VOCAB, nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  tokens = jax.random.randint(jax.random.key(1), (8, 33), 0, VOCAB)

  def loss(p):
    logits = nnx.merge(graphdef, p)(tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

  tx = optim.make(c.optimizer, models.hidden_lr_scale(c.model))
  update = jax.jit(lambda p, s: optim.apply_updates(tx, jax.grad(loss)(p), s, p, jnp.float32(lr)))
  state, p = tx.init(params), params
  for _ in range(steps):
    p, state = update(p, state)
  outputs = jax.jit(
    lambda q: (nnx.merge(graphdef, q).features(tokens), nnx.merge(graphdef, q)(tokens))
  )
  (h0, l0), (h1, l1) = outputs(params), outputs(p)
  rms = lambda x: float(jnp.sqrt(jnp.mean(jnp.square(x))))
  return {"hidden": rms(h1 - h0), "logits": rms(l1 - l0)}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.coord_check")
  parser.add_argument("--out", default="study/coord_check")
  args = parser.parse_args(argv)
  from analysis import plots  # noqa: PLC0415

  os.makedirs(args.out, exist_ok=True)
  sizes = {param: [update_sizes(param, w) for w in WIDTHS] for param in ("sp", "mup")}
  path = plots.coord_check(WIDTHS, sizes, os.path.join(args.out, "coord_check.png"))
  for param, rows in sizes.items():
    print(param, " ".join(f"{w}:{r['hidden']:.3f}" for w, r in zip(WIDTHS, rows)))
  print(f"plot: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
