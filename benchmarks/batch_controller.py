"""Cost of the batch-size controller: statistics steps, switches, and what the tests' groups buy.

    python benchmarks/batch_controller.py [--blocks=100]

prints JSON measured in one process on `configs/tiny.py`:
- `steps`: seconds per 10 steps of batch 64 (2 microbatches of 32) without statistics (`plain`),
  with the norm test every 10th step (`interval_10`) and every step (`every_step`), timed in
  alternating 10-step blocks of the compiled steps; `overhead_*` is the median over blocks of the
  ratio to the plain block before it, minus 1 (goal for interval 10: <= 0.01).
- `stall`: the time training waited at a 32 -> 64 switch, in steady steps of the new size: a ramp
  with the next layout compiled ahead in a background thread and without, and a norm-test switch
  (its plain and statistics variants compiled ahead).
- `memory`: compiled temporary bytes of the inner-product statistics step against M at a fixed
  batch (XLA's memory analysis), next to the plain step and the parameter bytes.
- `spread`: p10 / p50 / p90 of the batch the norm and inner-product tests request from a batch of
  64 Gaussian per-example gradients (100 dimensions) cut into M groups, 500 draws each; M = 64 is
  the per-example reference, `norm_expected` the value the norm test estimates.
"""

import functools
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging
from flax import nnx

from cbs import compiled_steps
from cbs import models
from cbs import step
from cbs import train
from cbs import train_state
from cbs.batching import controller as controller_lib
from cbs.batching import statistics
from cbs.metrics import records
from cbs.optim import ewa
from cbs.optim import optimizers as optim
from cbs.parallel import sharding
from configs import tiny

SEQ_LEN = 64
_BLOCKS = flags.DEFINE_integer("blocks", 100, "alternating 10-step blocks timed per variant")


def run(steps: int, **batch) -> tuple[list[dict], dict]:
  config = tiny.get_config()
  config.compile_cache_dir = ""
  config.eval.every_tokens = config.checkpoint.every_tokens = 0
  config.log.every_steps = 1
  config.batch.update(batch)
  config.train_tokens = steps * config.batch.size * SEQ_LEN
  with tempfile.TemporaryDirectory() as workdir:
    progress = train.train_and_evaluate(config, workdir)
    return [r for r in records.read_records(workdir) if "loss" in r], progress


def steady_step_seconds(records: list[dict], size: int) -> float:
  """Median seconds per step at `size`, skipping each size's first two steps (compile, warm-up)."""
  times = [size * SEQ_LEN / r["tokens_per_sec"] for r in records if r["batch_size"] == size]
  return float(np.median(times[2:]))


def step_costs(blocks: int) -> dict:
  """Seconds per 10 steps of one layout's compiled steps, run in alternating 10-step blocks.

  Each block is what the loop runs between two log points: 10 plain steps, 9 plain steps and one
  statistics step whose sums are read back to the host (a test every 10th step), or 10 statistics
  steps each read back (a test every step). Alternating blocks see the same machine load.
  """
  config = tiny.get_config()
  config.compile_cache_dir = ""
  config.batch.update(size=64, microbatch=32, schedule="norm", max_size=1 << 20, eta=1e6)
  vocab = config.data.synthetic.vocab_size
  setup = compiled_steps.step_setup(config, vocab, sharding.make_mesh(config.mesh))
  where = setup.placement
  compile_step = compiled_steps.step_compiler(config, setup)
  control = controller_lib.Controller(config.batch, where.data_parallel, compile_step)
  steps = {tested: compile_step(control.key(64, tested)) for tested in (False, True)}
  control.close()
  state = train_state.create(config, vocab, setup.state_layout, where.mesh, where.rules)
  rng = np.random.default_rng(0)
  host = {
    "inputs": rng.integers(0, vocab, (64, SEQ_LEN), dtype=np.int32),
    "targets": rng.integers(0, vocab, (64, SEQ_LEN), dtype=np.int32),
    "weights": np.ones((64, SEQ_LEN), np.float32),
  }
  batch = sharding.to_global(host, where.batch)
  scalars = (np.float32(1e-3), np.float32(0.0), ewa.taus(config.ewa, 64 * SEQ_LEN))
  patterns = {"plain": [False] * 10, "interval_10": [False] * 9 + [True], "every_step": [True] * 10}

  def block(pattern: list[bool]) -> float:
    nonlocal state
    start = time.perf_counter()
    for tested in pattern:
      state, step_metrics = steps[tested](state, batch, *scalars)
      if tested:  # the controller's decision needs the sums on the host
        jax.device_get(step_metrics)
    jax.block_until_ready(state)
    return time.perf_counter() - start

  for pattern in patterns.values():  # warm-up
    block(pattern)
  seconds = {name: [] for name in patterns}
  for _ in range(blocks):
    for name, pattern in patterns.items():
      seconds[name].append(block(pattern))
  result = {
    "blocks": blocks,
    "test_groups": control.test_groups(64),
    **{
      f"seconds_per_10_steps_{name}": {
        "median": round(float(np.median(v)), 4),
        "min": round(float(np.min(v)), 4),
      }
      for name, v in seconds.items()
    },
  }
  for name in ("interval_10", "every_step"):
    ratios = np.array(seconds[name]) / np.array(seconds["plain"])
    result[f"overhead_{name}"] = round(float(np.median(ratios)) - 1, 4)
  return result


def stalls() -> dict:
  result = {}
  for precompile in (True, False):
    # 60 steps at 32 leave the background compile of 64 time to finish before the switch.
    records, progress = run(
      90,
      size=32,
      max_size=64,
      schedule="ramp",
      precompile=precompile,
      ramp=((0, 32), (60 * 32 * SEQ_LEN, 64)),
    )
    name = "ramp_precompiled" if precompile else "ramp_without"
    switch = progress["batch"]["history"][0]
    result[f"{name}_seconds"] = switch["stall_seconds"]
    result[f"{name}_steps"] = round(switch["stall_seconds"] / steady_step_seconds(records, 64), 2)
  # The first test, at step 300, asks for far more than the cap of 64; until then both variants of
  # 32 and the plain step of 64 (the cap: no more tests) compile in the background.
  records, progress = run(330, size=32, max_size=64, schedule="norm", eta=0.1, test_interval=300)
  switch = progress["batch"]["history"][0]
  result["norm_precompiled_switch_step"] = switch["step"]
  result["norm_precompiled_seconds"] = switch["stall_seconds"]
  result["norm_precompiled_steps"] = round(
    switch["stall_seconds"] / steady_step_seconds(records, 64), 2
  )
  return result


def memory(groups=(2, 4, 8, 16), rows: int = 16, seq_len: int = 8, vocab: int = 4096) -> dict:
  """Temporary bytes of the compiled step at a fixed batch of short sequences, where parameters
  (a large vocabulary) dominate the activations."""
  config = tiny.get_config()
  graphdef, params = nnx.split(models.build_model(config.model, vocab, nnx.Rngs(0)))
  tx = optim.make(config.optimizer, 1.0)
  state = jax.eval_shape(lambda: {"params": params, "opt": tx.init(params), "ewa": {}})
  batch = {
    k: jax.ShapeDtypeStruct((rows, seq_len), d)
    for k, d in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))
  }

  def temp_bytes(m: int, stats: str) -> int:
    fn = jax.jit(
      functools.partial(step.train_step, graphdef=graphdef, tx=tx, groups=m, statistics=stats)
    )
    return fn.lower(state, batch, 1e-3, 0.0, {}).compile().memory_analysis().temp_size_in_bytes

  return {
    "batch": [rows, seq_len],
    "parameter_bytes": 4 * sum(x.size for x in jax.tree.leaves(params)),
    "plain_step_temp_bytes": {m: temp_bytes(m, "none") for m in groups[:1]},
    "inner_product_step_temp_bytes": {m: temp_bytes(m, "full") for m in groups},
  }


def spread(
  groups=(2, 4, 8, 16, 32, 64),
  batch: int = 64,
  dim: int = 100,
  draws: int = 500,
  eta: float = 0.1,
  theta: float = 0.1,
) -> dict:
  rng = np.random.default_rng(0)
  mu, s = rng.normal(size=dim) * 0.2, rng.uniform(0.5, 1.5, size=dim)
  # What the norm test estimates: tr(Sigma) / (eta^2 E|g|^2), E|g|^2 = |mu|^2 + tr(Sigma) / batch.
  exact_norm = (s**2).sum() / (eta**2 * (mu @ mu + (s**2).sum() / batch))
  table = {}
  for m in groups:
    requested = {"norm": [], "inner_product": []}
    for _ in range(draws):
      means = (mu + s * rng.normal(size=(m, batch // m, dim))).mean(1)
      g = means.mean(0)
      r = means - g
      noise = statistics.noise((means**2).sum(1).mean(), g @ g, m, batch // m)
      requested["norm"].append(statistics.norm_test_size(noise["trace"], g @ g, eta))
      requested["inner_product"].append(
        statistics.inner_product_size(
          (r @ g).mean(), ((r @ g) ** 2).mean(), g @ g, m, batch // m, theta
        )
      )
    table[m] = {
      name: [round(float(p), 1) for p in np.percentile(v, [10, 50, 90])]
      for name, v in requested.items()
    }
  return {"norm_expected": round(float(exact_norm), 1), "p10_p50_p90": table}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  result = {
    "spread": spread(),
    "memory": memory(),
    "stall": stalls(),
    "steps": step_costs(_BLOCKS.value),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
