"""Cost of the batch-size controller: statistics steps, switches, and what the tests' groups buy.

    python benchmarks/batch_controller.py [--rounds=3]

prints JSON measured in one process on `configs/tiny.py` (batch 64 = 2 microbatches of 32):
- `steps`: seconds per 10 steps (median over 10-step log windows after warm-up) without statistics
  (`plain`), with the norm test every 10th step (`interval_10`) and every step (`every_step`), run
  in alternating rounds; `overhead_*` is the median over rounds of the ratio to that round's plain
  run, minus 1 (goal for interval 10: <= 0.01). Each test reads its sums back to the host.
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

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging
from flax import nnx

from cbs import metrics
from cbs import models
from cbs import optim
from cbs import step
from cbs import train
from cbs.batching import statistics
from configs import tiny

SEQ_LEN = 64
_ROUNDS = flags.DEFINE_integer("rounds", 3, "alternating rounds of the plain and tested runs")


def run(steps: int, log_every: int = 1, **batch) -> tuple[list[dict], dict]:
  config = tiny.get_config()
  config.compile_cache_dir = ""
  config.eval.every_tokens = config.checkpoint.every_tokens = 0
  config.log.every_steps = log_every
  config.batch.update(batch)
  config.train_tokens = steps * config.batch.size * SEQ_LEN
  with tempfile.TemporaryDirectory() as workdir:
    progress = train.train_and_evaluate(config, workdir)
    return [r for r in metrics.read_records(workdir) if "loss" in r], progress


def steady_step_seconds(records: list[dict], size: int) -> float:
  """Median seconds per step at `size`, skipping each size's first two steps (compile, warm-up)."""
  times = [size * SEQ_LEN / r["tokens_per_sec"] for r in records if r["batch_size"] == size]
  return float(np.median(times[2:]))


def window_seconds(records: list[dict], skip_steps: int = 30) -> float:
  """Median seconds of the 10-step log windows after `skip_steps` (compiles, warm-up)."""
  windows = [r for r in records if r["step"] % 10 == 0 and r["step"] > skip_steps]
  return float(np.median([r["batch_size"] * SEQ_LEN * 10 / r["tokens_per_sec"] for r in windows]))


def step_costs(rounds: int) -> dict:
  variants = {"plain": {}, "interval_10": dict(test_interval=10),
              "every_step": dict(test_interval=1)}
  seconds = {name: [] for name in variants}
  for _ in range(rounds):
    for name, interval in variants.items():
      tested = dict(schedule="norm", max_size=1 << 20, eta=1e6, **interval) if interval else {}
      records, _ = run(150, log_every=10, size=64, microbatch=32, precompile=False, **tested)
      seconds[name].append(window_seconds(records))
  result = {f"seconds_per_10_steps_{name}": [round(s, 4) for s in v] for name, v in seconds.items()}
  for name in ("interval_10", "every_step"):
    ratios = np.array(seconds[name]) / np.array(seconds["plain"])
    result[f"overhead_{name}"] = round(float(np.median(ratios)) - 1, 4)
  return result


def stalls() -> dict:
  result = {}
  for precompile in (True, False):
    # 60 steps at 32 leave the background compile of 64 time to finish before the switch.
    records, progress = run(90, size=32, max_size=64, schedule="ramp", precompile=precompile,
                            ramp=((0, 32), (60 * 32 * SEQ_LEN, 64)))
    name = "ramp_precompiled" if precompile else "ramp_without"
    switch = progress["batch"]["history"][0]
    result[f"{name}_seconds"] = switch["stall_seconds"]
    result[f"{name}_steps"] = round(switch["stall_seconds"] / steady_step_seconds(records, 64), 2)
  # The first test, at step 60, asks for far more than the cap of 64.
  records, progress = run(90, size=32, max_size=64, schedule="norm", eta=0.1, test_interval=60)
  switch = progress["batch"]["history"][0]
  result["norm_precompiled_switch_step"] = switch["step"]
  result["norm_precompiled_seconds"] = switch["stall_seconds"]
  result["norm_precompiled_steps"] = round(
      switch["stall_seconds"] / steady_step_seconds(records, 64), 2)
  return result


def memory(groups=(2, 4, 8, 16), rows: int = 16, seq_len: int = 8, vocab: int = 4096) -> dict:
  """Temporary bytes of the compiled step at a fixed batch of short sequences, where parameters
  (a large vocabulary) dominate the activations."""
  config = tiny.get_config()
  graphdef, params = nnx.split(models.build_model(config.model, vocab, nnx.Rngs(0)))
  tx = optim.make(config.optimizer, 1.0)
  state = jax.eval_shape(lambda: {"params": params, "opt": tx.init(params), "ewa": {}})
  batch = {k: jax.ShapeDtypeStruct((rows, seq_len), d) for k, d in
           (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))}

  def temp_bytes(m: int, stats: str) -> int:
    fn = jax.jit(functools.partial(step.train_step, graphdef=graphdef, tx=tx, groups=m,
                                   statistics=stats))
    return fn.lower(state, batch, 1e-3, 0.0, {}).compile().memory_analysis().temp_size_in_bytes

  return {"batch": [rows, seq_len],
          "parameter_bytes": 4 * sum(x.size for x in jax.tree.leaves(params)),
          "plain_step_temp_bytes": {m: temp_bytes(m, "none") for m in groups[:1]},
          "inner_product_step_temp_bytes": {m: temp_bytes(m, "full") for m in groups}}


def spread(groups=(2, 4, 8, 16, 32, 64), batch: int = 64, dim: int = 100, draws: int = 500,
           eta: float = 0.1, theta: float = 0.1) -> dict:
  rng = np.random.default_rng(0)
  mu, s = rng.normal(size=dim) * 0.2, rng.uniform(0.5, 1.5, size=dim)
  # What the norm test estimates: tr(Sigma) / (eta^2 E|g|^2), E|g|^2 = |mu|^2 + tr(Sigma) / batch.
  exact_norm = (s ** 2).sum() / (eta ** 2 * (mu @ mu + (s ** 2).sum() / batch))
  table = {}
  for m in groups:
    requested = {"norm": [], "inner_product": []}
    for _ in range(draws):
      means = (mu + s * rng.normal(size=(m, batch // m, dim))).mean(1)
      g = means.mean(0)
      r = means - g
      noise = statistics.noise((means ** 2).sum(1).mean(), g @ g, m, batch // m)
      requested["norm"].append(statistics.norm_test_size(noise["trace"], g @ g, eta))
      requested["inner_product"].append(statistics.inner_product_size(
          (r @ g).mean(), ((r @ g) ** 2).mean(), g @ g, m, batch // m, theta))
    table[m] = {name: [round(float(p), 1) for p in np.percentile(v, [10, 50, 90])]
                for name, v in requested.items()}
  return {"norm_expected": round(float(exact_norm), 1), "p10_p50_p90": table}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  result = {"spread": spread(), "memory": memory(), "stall": stalls(),
            "steps": step_costs(_ROUNDS.value)}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
