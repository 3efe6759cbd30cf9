"""The TPU compile check: the tiny model's real step compiled for a v5e:2x2 slice with libtpu.

Needs libtpu (the `tpu` extra, part of the test install); without it, or where libtpu cannot
compile on this host, the compiling tests skip with the reason, except under CI (`CI=true`), which
installs the extra: there they fail.
"""

import importlib.util
import os
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cbs.batching import controller as controller_lib
from cbs.batching import memory_fit as fit
from cbs.config import validation
from cbs.metrics import flops as flops_lib
from cbs.tpu import collectives
from cbs.tpu import fit_check
from cbs.tpu import interconnect
from cbs.tpu import step_cost
from cbs.tpu import topology
from configs import base
from tests.helpers import TINY
from tests.helpers import last_line
from tests.helpers import run_module
from tests.helpers import tiny_config

TOPOLOGY = "v5e:2x2"  # 4 chips of 16 GiB


def require_libtpu() -> list:
  """The compile-only devices of TOPOLOGY; where libtpu is missing or broken, a skip with the
  reason, or under CI (which installs the `tpu` extra) a failure."""
  under_ci = os.environ.get("CI", "").lower() in ("true", "1")
  give_up = pytest.fail if under_ci else pytest.skip
  if importlib.util.find_spec("libtpu") is None:
    give_up("libtpu is not installed (pip install -e '.[test,tpu]')")
  try:
    return topology.topology_devices(TOPOLOGY, 1)[1]
  except Exception as e:
    give_up(f"libtpu cannot compile for {TOPOLOGY} on this host: {e}")


@pytest.fixture(scope="module")
def tpu():
  return require_libtpu()


def batch_config(**batch):
  """configs/tiny.py with these `batch` settings."""
  return tiny_config({f"batch.{key}": value for key, value in batch.items()})


def huge_config(**batch):
  """512 sequences per chip with 131k-row logits: ~18 GiB, over a v5e chip's 16 GiB.

  Large logits rather than a large batch: the compile time grows with the bytes of the layout.
  """
  config = batch_config(size=2048, **batch)
  config.model.vocab_size = 131072
  return config


def test_a_huge_microbatch_does_not_fit(tpu):
  report = fit_check.check(huge_config(), TOPOLOGY)
  (layout,) = report["layouts"]
  assert (layout["batch_size"], layout["microbatch"], layout["groups"]) == (2048, 512, 1)
  assert not layout["fits"] and not report["fits"] and report["largest_fitting_batch"] is None
  assert "RESOURCE_EXHAUSTED" in layout["bytes"]["error"]
  assert report["mesh"] == {"data": 4, "model": 1} and report["device_kind"] == "TPU v5 lite"


def test_bytes_grow_with_the_microbatch_and_auto_takes_the_largest_that_fits(tpu):
  report = fit_check.check(huge_config(microbatch="auto"), TOPOLOGY)
  chosen, budget = report["auto"]["chosen"], report["auto"]["budget_bytes"]
  tried = {int(m): total for m, total in report["auto"]["tried"].items()}
  fitting = sorted((m, total) for m, total in tried.items() if total is not None)
  assert len(fitting) >= 2
  assert all(a[1] < b[1] for a, b in zip(fitting, fitting[1:]))  # bytes grow with the microbatch
  assert 1 <= chosen < 512 and tried[chosen] <= budget  # fits with the headroom ...
  assert tried[2 * chosen] is None or tried[2 * chosen] > budget  # ... the next candidate does not
  assert max(m for m, total in fitting if total <= budget) == chosen
  (layout,) = report["layouts"]
  assert (layout["microbatch"], layout["groups"]) == (chosen, 512 // chosen)
  assert layout["bytes"]["total"] == tried[chosen] and layout["fits_with_headroom"]


def test_compiled_flops_agree_with_the_model_count(tpu):
  """XLA's count of a loop-free step (unscanned blocks, one microbatch) vs `cbs.metrics.flops`.

  The model count takes matrix multiplies and attention only; the compiled program adds norms,
  softmax, the loss and the optimizer update, so it may exceed it by up to 1.5x, never fall short.
  """
  config = tiny_config()
  report = fit_check.check(config, TOPOLOGY)
  (layout,) = report["layouts"]
  per_chip = flops_lib.train_flops_per_token(config.model, 32, 64) * 32 * 64 / 4
  assert layout["model_flops"] == pytest.approx(per_chip)
  assert layout["loop_scale"] == 1
  assert 1.0 <= layout["xla_flops"] / per_chip <= 1.5
  # Without windowed loops the host's count of the unpartitioned step, over the chips, is the TPU
  # program's, less the work every chip repeats (here the update of replicated parameters).
  assert 0.9 * layout["tpu_xla_flops"] <= layout["xla_flops"] < layout["tpu_xla_flops"]
  estimate = layout["estimate"]
  assert 0 < estimate["step_seconds_lower_bound"] < estimate["step_seconds_upper_bound"]
  assert 0 < estimate["mfu_lower_bound"] < estimate["mfu_upper_bound"] < 1
  # Data parallel over 4 chips, replicated float32 parameters: the gradients' all-reduce sends
  # 2 x 3/4 of them from each chip; the loss and metrics add a few scalars.
  gradients = 4 * report["params"]
  assert layout["communication"]["by_link"] == {
    "ici": {"all-reduce": {"data": pytest.approx(2 * 3 / 4 * gradients, rel=0.05)}}
  }
  assert estimate["communication_seconds"] == pytest.approx(
    layout["communication"]["bytes_per_chip"] / (2 * 50e9)
  )  # 2x2: one port per dimension


WIDTH = 512  # the FSDP matmul layer's weight is WIDTH x WIDTH


def fsdp_matmul_step(devices: list, layers: int | None):
  """The mesh and compiled update `w - grad` of sum(tanh(x @ w)): bf16 weights split by rows over
  the chips (FSDP), the batch by rows; `layers` stacked weights scanned over, or one."""
  mesh = Mesh(np.array(devices), ("data",))
  spec = P("data", None) if layers is None else P(None, "data", None)
  shape = (WIDTH, WIDTH) if layers is None else (layers, WIDTH, WIDTH)
  weights = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, spec))
  batch = jax.ShapeDtypeStruct(
    (64, WIDTH), jnp.bfloat16, sharding=NamedSharding(mesh, P("data", None))
  )

  def loss(w, x):
    if layers is None:
      return jnp.sum(jnp.tanh(x @ w).astype(jnp.float32))
    h, _ = jax.lax.scan(lambda h, w_layer: (jnp.tanh(h @ w_layer), None), x, w)
    return jnp.sum(h.astype(jnp.float32))

  step = jax.jit(lambda w, x: w - jax.grad(loss)(w, x), out_shardings=NamedSharding(mesh, spec))
  return mesh, step.lower(weights, batch).compile()


@pytest.mark.parametrize("layers, gathers, scatters", [(None, 1, 1), (3, 6, 3)])
def test_fsdp_matmul_collectives_match_their_closed_form(tpu, layers, gathers, scatters):
  """Over 4 chips each chip gathers a bf16 weight (3/4 of WIDTH^2 x 2 B arrive from the other
  three) and reduce-scatters its gradient (3/4 of it leaves). Scanned over 3 layers, the forward
  and the backward loop each gather every layer's weight (the scan keeps only the split weights)
  and the backward loop scatters every gradient: the loops' trip counts multiply the bytes."""
  mesh, compiled = fsdp_matmul_step(tpu, layers)
  program = collectives.count(compiled.as_text())
  links = topology.links_of(topology.CHIPS["v5e"], tpu, 25e9)
  traffic = interconnect.traffic(program, mesh, links)
  share = 3 / 4 * WIDTH * WIDTH * 2
  assert traffic["by_link"] == {
    "ici": {
      "all-gather": {"data": pytest.approx(gathers * share, rel=0.05)},
      "reduce-scatter": {"data": pytest.approx(scatters * share, rel=0.05)},
    }
  }
  assert program.unknown_trip_counts == 0 and traffic["dcn_bytes"] == 0
  # 2x2 chips: one port along each of the two dimensions, 50 GB/s each
  assert traffic["ici_seconds"] == pytest.approx(traffic["ici_bytes"] / 100e9)


def test_one_chip_without_fsdp_communicates_nothing(tpu):
  config = tiny_config()
  config.mesh.data, config.mesh.model, config.mesh.fsdp = 1, 1, False
  report = fit_check.check(config, TOPOLOGY)
  (layout,) = report["layouts"]
  assert report["chips"] == 4 and report["mesh"] == {"data": 1, "model": 1}
  communication, estimate = layout["communication"], layout["estimate"]
  assert communication["bytes_per_chip"] == 0 and communication["by_link"] == {}
  assert estimate["communication_seconds"] == 0 == estimate["communication_share"]
  assert (
    estimate["step_seconds_lower_bound"]
    == estimate["step_seconds_upper_bound"]
    == max(estimate["compute_seconds"], estimate["hbm_seconds"])
  )


def test_fsdp_chips_compute_their_own_rows_with_gathered_weights(tpu):
  """16 chips with FSDP, 8 sequences each: a chip's temporaries stay below one float32 copy of the
  *global* batch's logits (128 x 64 x 32768 x 4 B = 1 GiB). Without pinned activation shardings
  the partitioner contracted over the data-split `embed` axis and held and all-reduced the whole
  batch's logits on every chip (2.1 GiB of temporaries here, 8.1 MiB pinned)."""
  config = batch_config(size=128)
  config.mesh.fsdp, config.mesh.data, config.model.vocab_size = True, -1, 32768
  (layout,) = fit_check.check(config, "v5e:4x4")["layouts"]
  assert layout["bytes"]["temporaries"] < 128 * 64 * 32768 * 4 / 8


def test_a_growing_batch_checks_every_layout_on_two_slices(tpu):
  config = batch_config(size=32, max_size=64, round="pow2", schedule="norm")
  config.model.scan_layers = True
  report = fit_check.check(config, TOPOLOGY, slices=2)
  assert report["chips"] == 8 and report["mesh"] == {"data": 8, "model": 1}
  sizes = [
    (entry["batch_size"], entry["groups"], entry["statistics"]) for entry in report["layouts"]
  ]
  # every size the norm test can reach: statistics (two groups at least) until the cap
  assert sizes == [(32, 2, "norm"), (64, 2, "none")]
  assert report["fits"] and report["largest_fitting_batch"] == 64
  for entry in report["layouts"]:  # scanned blocks, 2 groups: each loop body counted 2 x 2 times
    assert entry["loop_scale"] > 3
    # the gradients are reduced within each slice over ICI and between the slices over DCN
    links = entry["communication"]["by_link"]
    assert {axis for kinds in links.values() for axes in kinds.values() for axis in axes} == {
      "data"
    }
    assert entry["communication"]["dcn_bytes"] > 0 and entry["communication"]["ici_bytes"] > 0


def test_each_layout_is_compiled_once_and_its_executable_let_go():
  """A dozen compiled 1B programs held at once ran the host out of memory: keep only figures."""

  class Executable:
    def memory_analysis(self):
      return "bytes"

    def cost_analysis(self):
      return {"flops": 3.0}

  compiled, alive = [], []

  def compile_step(key):
    compiled.append(key)
    executable = Executable()
    alive.append(weakref.ref(executable))
    return executable

  figures = step_cost.figures_of(compile_step)
  first = figures((128, 1, "none"))
  assert figures((128, 1, "none")) is first and compiled == [(128, 1, "none")]
  figures((256, 2, "norm"))
  assert compiled == [(128, 1, "none"), (256, 2, "norm")]
  assert [ref() for ref in alive] == [None, None]
  assert (first.memory_analysis(), first.cost_analysis()) == ("bytes", {"flops": 3.0})


def test_reachable_sizes_follow_rounding_and_ramps():
  def sizes(**kw):
    cfg = base.get_config().batch
    cfg.update({"size": 16, "max_size": 128, **kw})
    return controller_lib.Controller(cfg, 2, lambda key: None).reachable_sizes()

  assert sizes(round="pow2", schedule="norm") == [16, 32, 64, 128]
  assert sizes(schedule="norm", microbatch=4) == list(range(16, 129, 8))
  assert sizes(schedule="ramp", ramp=((0, 16), (10, 48), (20, 128))) == [16, 48, 128]
  assert sizes(max_size=-1) == [16]


def test_bad_input_is_one_line():
  with pytest.raises(topology.UsageError, match=r"'v5x:4x4' is not known; .*v4, v5e, v5p, v6e"):
    topology.topology_devices("v5x:4x4", 1)
  config = tiny_config()
  config.data.source, config.data.vocab = "text_files", "/data/my.model"
  with pytest.raises(topology.UsageError, match="--config.model.vocab_size=ROWS"):
    fit_check.vocab_rows(config)
  config.data.vocab = "byte"
  assert fit_check.vocab_rows(config) == 384


def test_missing_libtpu_names_the_extra(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a)
  )
  with pytest.raises(topology.UsageError, match=r"pip install -e '\.\[tpu\]'"):
    topology.topology_devices("v5e:4x4", 1)


def test_cli_unknown_topology_exits_2_with_one_line():
  result = run_module("cbs.compile_check", [f"--config={TINY}", "--topology=v7:2x2"], timeout=120)
  assert result.returncode == 2
  assert last_line(result.stderr).startswith("cbs: --topology='v7:2x2' is not known")
  assert result.stdout == ""


def test_auto_microbatch_is_validated_and_whole_batch_on_cpu():
  config = batch_config(microbatch="auto")
  validation.validate(config, 8)
  config.batch.microbatch = "big"
  with pytest.raises(validation.ConfigError, match="batch.microbatch='big' must be"):
    validation.validate(config, 8)
  never = lambda key: pytest.fail("a CPU reports no memory limit: nothing to compile")
  assert fit.auto_microbatch(tiny_config().batch, 8, never) == -1


def test_a_broken_libtpu_fails_under_ci_and_skips_elsewhere(monkeypatch):
  def outcome() -> tuple[str, str]:
    try:
      require_libtpu()
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
      return ("fail" if isinstance(e, pytest.fail.Exception) else "skip"), str(e)
    return "ran", ""

  def broken(*args):
    raise RuntimeError("TPU initialization failed: no chips")

  monkeypatch.setattr(topology, "topology_devices", broken)
  monkeypatch.delenv("CI", raising=False)
  assert outcome() == (
    "skip",
    f"libtpu cannot compile for {TOPOLOGY} on this host: TPU initialization failed: no chips",
  )
  monkeypatch.setenv("CI", "true")
  assert outcome()[0] == "fail" and "no chips" in outcome()[1]
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a)
  )
  assert outcome() == ("fail", "libtpu is not installed (pip install -e '.[test,tpu]')")
  monkeypatch.delenv("CI")
  assert outcome() == ("skip", "libtpu is not installed (pip install -e '.[test,tpu]')")
