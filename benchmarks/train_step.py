"""Throughput, MFU, compile time and memory of the train step; prints one JSON object.

    python benchmarks/train_step.py [--sizes=tiny,20m,85m] [--dtype=float32] [--remat=none]
        [--scan_layers] [--attention=auto] [--compile_config=1.2b] [--steps=5]

- `peak_flops`: on CPU this machine's measured dense matmul throughput in the benchmark's dtype
  (2048^2 matmuls, best of ten, measured at the start and at the end of the run: the larger, so a
  quiet moment of a shared machine does not inflate MFU); on GPU/TPU the chip's published dense
  peak (H100 SXM bf16 989 TFLOP/s), the denominator of MFU.
- per size: steady tokens/s of the compiled step on one device (batch x 512 tokens; tiny: its 64;
  at least --steps steps and ~2 s),
  model FLOPs per token (`cbs.metrics.flops`: 6 x matmul params + causal attention), MFU, compile seconds
  and the compiled program's memory (arguments + temporaries, from XLA's memory analysis).
- `data_parallel`: tokens/s of the 20m step on an 8-device data-parallel mesh over the same step on
  one device (on CPU the 8 devices are fake and share the cores: this checks overhead, not speedup).
- `compile`: the `--compile_config` paper model (default 1.2b) lowered and compiled ahead of time
  for an 8-device fake mesh with FSDP, cold (empty persistent cache) and warm (from the cache).
"""

import os
import sys

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()

import json
import math
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from cbs import compiled_steps
from cbs import train_state
from cbs.metrics import flops
from cbs.parallel import sharding
from configs import c4
from configs import cbs_paper
from configs import tiny

_SIZES = flags.DEFINE_list("sizes", ["tiny", "20m", "85m"], "Models to time.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_REMAT = flags.DEFINE_string("remat", "none", "model.remat policy.")
_SCAN = flags.DEFINE_bool("scan_layers", False, "model.scan_layers: blocks under one scan.")
_ATTENTION = flags.DEFINE_string("attention", "auto", "model.attention implementation.")
_STEPS = flags.DEFINE_integer("steps", 5, "Least timed steps per size (after one warm-up step).")
_COMPILE = flags.DEFINE_string("compile_config", "1.2b", "Paper size compiled for 8 fake devices.")
_DATA_PARALLEL = flags.DEFINE_bool("data_parallel", True, "Time the 8-device data-parallel step.")

VOCAB = 32_000


def peak_flops(dtype) -> tuple[float, str]:
  """The MFU denominator: a chip's published peak, or this machine's best matmul of 10."""
  peak, source = flops.device_peak_flops(jnp.dtype(dtype).name)
  if source.startswith("measured"):
    return flops.measured_matmul_peak(dtype), source
  return peak, source


def size_config(size: str):
  if size == "tiny":
    c = tiny.get_config()
    c.batch.size, vocab = 32, 32
  else:
    c = cbs_paper.get_config("tiny")  # the protocol's optimizer; the model is replaced below
    if size == "20m":
      c.model.update(dict(num_layers=6, d_model=512, num_heads=8))
    else:
      c.model.update({k: v for k, v in c4.get_config(f"tfds,{size}").model.items()})
    c.data.seq_len, c.batch.size, vocab = 512, 4, VOCAB
  c.model.dtype, c.model.remat, c.model.scan_layers = _DTYPE.value, _REMAT.value, _SCAN.value
  c.model.attention = _ATTENTION.value
  c.compile_cache_dir = ""
  return c, vocab


def build(config, vocab: int, devices) -> compiled_steps.StepSetup:
  config.mesh.data = len(devices)
  return compiled_steps.step_setup(config, vocab, sharding.make_mesh(config.mesh, devices))


def time_step(config, vocab: int, devices) -> dict:
  setup = build(config, vocab, devices)
  where = setup.placement
  start = time.perf_counter()
  compiled = compiled_steps.step_compiler(config, setup)((config.batch.size, 1, "none"))
  compile_seconds = time.perf_counter() - start
  state = train_state.create(config, vocab, setup.state_layout, where.mesh, where.rules)
  rng = np.random.default_rng(0)
  shape = (config.batch.size, config.data.seq_len)
  host = {
    "inputs": rng.integers(0, vocab, shape, dtype=np.int32),
    "targets": rng.integers(0, vocab, shape, dtype=np.int32),
    "weights": np.ones(shape, np.float32),
  }
  batch = sharding.to_global(host, where.batch)
  taus = {name: np.float32(0.99) for name in compiled.args_info[0][4]}
  lr, wd = np.float32(1e-3), np.float32(0.0)
  start = time.perf_counter()
  state, metrics = compiled(state, batch, lr, wd, taus)  # warm-up
  jax.block_until_ready(metrics)
  # At least --steps steps and ~2 s, so small models are not timed on a few noisy milliseconds.
  steps = max(_STEPS.value, math.ceil(2.0 / (time.perf_counter() - start)))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch, lr, wd, taus)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / steps
  memory = compiled.memory_analysis()
  tokens = config.batch.size * config.data.seq_len
  return {
    "tokens_per_step": tokens,
    "steps_timed": steps,
    "step_seconds": seconds,
    "tokens_per_sec": tokens / seconds,
    "compile_seconds": compile_seconds,
    "memory_bytes": None
    if memory is None
    else int(
      memory.argument_size_in_bytes
      + memory.temp_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
    ),
  }


def compile_times(size: str) -> dict:
  config = cbs_paper.get_config(size)
  config.mesh.update(dict(data=8, fsdp=True))
  config.model.remat, config.model.scan_layers = _REMAT.value, _SCAN.value
  compile_step = compiled_steps.step_compiler(config, build(config, VOCAB, jax.devices()[:8]))
  out = {"config": f"configs/cbs_paper.py:{size}", "devices": 8, "fsdp": True}
  with tempfile.TemporaryDirectory() as cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    for kind in ("cold_seconds", "warm_seconds"):
      jax.clear_caches()
      start = time.perf_counter()
      compile_step((config.batch.size, 1, "none"))
      out[kind] = time.perf_counter() - start
    jax.config.update("jax_compilation_cache_dir", None)
  return out


def main(argv):
  del argv
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  peak, peak_source = peak_flops(dtype)
  result = {
    "backend": jax.devices()[0].platform,
    "device": jax.devices()[0].device_kind,
    "dtype": _DTYPE.value,
    "remat": _REMAT.value,
    "scan_layers": _SCAN.value,
    "attention": _ATTENTION.value,
    "peak_flops": peak,
    "peak_source": peak_source,
    "sizes": {},
  }
  for size in _SIZES.value:
    config, vocab = size_config(size)
    timing = time_step(config, vocab, jax.devices()[:1])
    per_token = flops.train_flops_per_token(config.model, vocab, config.data.seq_len)
    result["sizes"][size] = {
      **timing,
      "flops_per_token": per_token,
      "mfu": per_token * timing["tokens_per_sec"] / peak,
    }
    print(json.dumps({size: result["sizes"][size]}), file=sys.stderr, flush=True)
  if _DATA_PARALLEL.value and len(jax.devices()) >= 8:
    config, vocab = size_config("20m")
    config.batch.size = 8
    one = time_step(config, vocab, jax.devices()[:1])
    eight = time_step(config, vocab, jax.devices()[:8])
    result["data_parallel"] = {
      "model": "20m",
      "batch": 8,
      "tokens_per_sec_1": one["tokens_per_sec"],
      "tokens_per_sec_8": eight["tokens_per_sec"],
      "ratio": eight["tokens_per_sec"] / one["tokens_per_sec"],
    }
  if _COMPILE.value:
    result["compile"] = compile_times(_COMPILE.value)
  if result["peak_source"].startswith("measured"):  # the machine's best moment: a conservative MFU
    end_peak = flops.measured_matmul_peak(dtype)
    if end_peak > peak:
      result["peak_flops"] = end_peak
      for timing in result["sizes"].values():
        timing["mfu"] *= peak / end_peak
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
