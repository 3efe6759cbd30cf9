"""Layouts, schedules and controller decisions, with a stub compiler that records what it compiles."""

import gc
import weakref

import numpy as np
import pytest

from cbs.batching import controller as controller_lib
from cbs.batching import layout
from cbs.batching import schedules
from cbs.batching.noise_sums import NoiseSums
from configs import base


def batch_cfg(**kw):
  c = base.get_config().batch
  c.update(dict(size=16, max_size=128))
  c.update(kw)
  return c


@pytest.mark.parametrize(
  "size,rounding,expected",
  [
    (17, "multiple", 24),
    (16, "multiple", 16),
    (17, "pow2", 32),
    (33, "pow2", 64),
    (500, "pow2", 128),
    (500, "multiple", 128),
    (1, "multiple", 8),
  ],
)
def test_rounding_and_capping(size, rounding, expected):
  assert layout.round_size(size, unit=8, rounding=rounding, cap=128) == expected


def test_layout_is_microbatch_times_devices_times_accumulation():
  assert layout.make(96, microbatch=4, data_parallel=8) == layout.Layout(4, 8, 3)
  with pytest.raises(ValueError, match="not a multiple of microbatch 4 x data-parallel 8"):
    layout.make(100, 4, 8)


def test_ramp_schedules():
  stages = batch_cfg(schedule="ramp", ramp=((0, 16), (1000, 32), (5000, 128)))
  assert [schedules.scheduled_size(stages, t) for t in (0, 999, 1000, 4999, 9999)] == [
    16,
    16,
    32,
    32,
    128,
  ]
  linear = batch_cfg(schedule="ramp", ramp_tokens=1000)
  assert [schedules.scheduled_size(linear, t) for t in (0, 500, 2000)] == [16, 72, 128]


def test_lr_scaling_is_relative_to_the_initial_batch():
  assert schedules.lr_multiplier(batch_cfg(lr_scaling="sqrt"), 64) == pytest.approx(2.0)
  assert schedules.lr_multiplier(batch_cfg(lr_scaling="linear"), 64) == pytest.approx(4.0)
  assert schedules.lr_multiplier(batch_cfg(lr_scaling="none"), 64) == 1.0


def noisy_metrics(trace, grad_sq, groups, group_size):
  """Sums whose estimators return exactly `trace` and |g|^2 = grad_sq."""
  batch = groups * group_size
  return NoiseSums(
    grad_sq_norm=grad_sq, group_sq_norm_mean=grad_sq + trace * (1 / group_size - 1 / batch)
  )


class StubCompiler:
  def __init__(self):
    self.keys = []

  def __call__(self, key):
    self.keys.append(key)
    return lambda *args: key


def test_norm_test_grows_on_noise_and_not_without_it():
  compiler = StubCompiler()
  control = controller_lib.Controller(batch_cfg(schedule="norm", eta=0.5), 1, compiler)
  # One microbatch: the plain step has no scan, the statistics variant splits it in two groups.
  assert control.key(16) == (16, 1, "none") and control.key(16, True) == (16, 2, "norm")
  control.observe(1, 100, noisy_metrics(trace=0.0, grad_sq=1.0, groups=2, group_size=8))
  assert control.size == 16
  control.observe(2, 200, noisy_metrics(trace=10.0, grad_sq=1.0, groups=2, group_size=8))
  assert control.size == 48  # ceil(10 / 0.25) = 40, rounded up to a multiple of 16
  control.observe(3, 300, noisy_metrics(trace=1000.0, grad_sq=1.0, groups=3, group_size=16))
  assert control.size == 128 and not control.testing()
  assert control.key(128, True) == (128, 8, "none")  # at the cap the statistics are switched off
  assert [h["new"] for h in control.get_state()["history"]] == [48, 128]
  control.close()


def test_compiles_each_used_layout_once_and_prefetches_the_next_ramp_stage():
  compiler = StubCompiler()
  cfg = batch_cfg(schedule="ramp", ramp=((0, 16), (100, 32), (200, 64)))
  control = controller_lib.Controller(cfg, 2, compiler)
  used = []
  for step, tokens in enumerate((0, 50, 100, 150, 200, 250)):
    control.before_step(step, tokens)
    used.append(control.step_fn()(None))
  control.close()
  assert used == [(16, 1, "none")] * 2 + [(32, 2, "none")] * 2 + [(64, 4, "none")] * 2
  assert sorted(compiler.keys) == sorted(set(used))
  assert len(compiler.keys) == len(set(compiler.keys))


def test_a_grown_batch_lets_the_smaller_layouts_executables_go():
  made = {}

  def compiler(key):
    made[key] = step = lambda *args: key
    return step

  cfg = batch_cfg(schedule="ramp", ramp=((0, 16), (100, 32), (200, 64)))
  control = controller_lib.Controller(cfg, 2, compiler)
  control.step_fn()  # compiles 16 and prefetches the next stage, 32
  control.before_step(1, 200)  # a jump past 32
  assert control.step_fn()(None) == (64, 4, "none")
  control.close()
  # 16's step, and 32's if its compile started before the jump cancelled it
  released = {key: weakref.ref(step) for key, step in made.items() if key[0] < 64}
  made.clear()
  gc.collect()
  assert (16, 1, "none") in released
  assert all(ref() is None for ref in released.values())


def test_state_round_trips_through_json():
  import json

  control = controller_lib.Controller(batch_cfg(schedule="norm", stats_ema=0.5), 1, StubCompiler())
  control.observe(1, 10, noisy_metrics(trace=10.0, grad_sq=1.0, groups=2, group_size=8))
  restored = controller_lib.Controller(batch_cfg(schedule="norm", stats_ema=0.5), 1, StubCompiler())
  restored.set_state(json.loads(json.dumps(control.get_state())))
  assert restored.get_state() == control.get_state()
  for c in (control, restored):
    c.observe(2, 20, noisy_metrics(trace=60.0, grad_sq=1.0, groups=2, group_size=16))
  assert restored.size == control.size and np.isclose(
    restored.state["smoothed"]["trace"], control.state["smoothed"]["trace"]
  )
  control.close()
  restored.close()


def test_constant_run_monitors_the_noise_scale_without_growing():
  control = controller_lib.Controller(batch_cfg(max_size=-1, gns_every=5), 1, StubCompiler())
  assert control.key(16, True) == (16, 2, "norm") and control.testing()
  assert control.keys(16) == [(16, 1, "none"), (16, 2, "norm")]
  assert [s for s in range(1, 16) if control.wants_statistics(s)] == [5, 10, 15]
  # B_simple = trace / |G|^2 with |G|^2 = grad_sq - trace / batch: 10 / (1 - 10 / 16).
  control.observe(5, 100, noisy_metrics(trace=10.0, grad_sq=1.0, groups=2, group_size=8))
  assert control.last_statistics["grad_noise_scale"] == pytest.approx(10 / (1 - 10 / 16))
  assert control.size == 16 and not control.get_state()["history"]
  quiet = controller_lib.Controller(batch_cfg(max_size=-1), 1, StubCompiler())
  assert quiet.key(16, True) == (16, 1, "none") and not quiet.wants_statistics(5)
  control.close()
  quiet.close()


def test_measured_schedule_ramps_along_a_probe_result(tmp_path):
  probe = tmp_path / "probe.json"
  probe.write_text(
    '{"points": [{"tokens": 300, "local_cbs": 64}, {"tokens": 100, "local_cbs": 32},'
    ' {"tokens": 500, "local_cbs": 48}]}'
  )
  cfg = batch_cfg(schedule="measured", probe_file=str(probe), max_size=-1)
  # Sorted by tokens, never decreasing: the 48 measured at 500 tokens keeps the 64 before it.
  assert schedules.stages(cfg) == ((100, 32), (300, 64), (500, 64))
  control = controller_lib.Controller(cfg, 1, StubCompiler())
  sizes = [control.before_step(s, t) for s, t in enumerate((0, 99, 100, 299, 300, 600))]
  assert sizes == [16, 16, 32, 32, 64, 64]
  control.close()
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(ValueError, match="is not a cbs.probe result"):
    schedules.measured_stages(str(tmp_path / "bad.json"))


@pytest.mark.parametrize(
  "data_parallel,local,size,test_groups,expected",
  [
    (1, False, 16, -1, (2, 2)),  # one microbatch split in two
    (1, False, 64, -1, (4, 4)),  # 4 accumulation steps of 16 are 4 groups
    (1, False, 16, 3, (4, 4)),  # 3 groups do not divide 16 rows: rounded up to 4
    (1, False, 16, 64, (16, 16)),  # at most one sequence per group
    (4, True, 16, -1, (1, 4)),  # each device's local gradient is a group
    (4, True, 64, -1, (4, 16)),  # data-parallel x accumulation, at no extra pass
    (4, True, 16, 8, (2, 8)),  # more groups: each device's microbatch split in two
    (4, False, 64, -1, (4, 4)),  # FSDP: no local groups, the microbatches only
  ],
)
def test_test_groups_follow_the_layout(data_parallel, local, size, test_groups, expected):
  control = controller_lib.Controller(
    batch_cfg(schedule="norm", test_groups=test_groups),
    data_parallel,
    StubCompiler(),
    local_groups=local,
  )
  assert control.accumulation(size) == size // 16
  scan, groups = expected
  assert control.key(size, True) == (size, scan, "norm") and control.test_groups(size) == groups
  control.close()


def test_statistics_variant_only_on_test_steps_and_both_compiled_ahead():
  compiler = StubCompiler()
  control = controller_lib.Controller(
    batch_cfg(schedule="norm", eta=1e6, test_interval=3), 1, compiler
  )
  control.prepare(16)
  control.prepare(32)
  used = [control.step_fn(control.wants_statistics(step))(None) for step in range(1, 7)]
  assert used == [(16, 1, "none"), (16, 1, "none"), (16, 2, "norm")] * 2
  control.close()
  assert sorted(compiler.keys) == [
    (16, 1, "none"),
    (16, 2, "norm"),
    (32, 2, "none"),
    (32, 2, "norm"),
  ]
  every = controller_lib.Controller(batch_cfg(schedule="norm"), 1, StubCompiler())
  assert every.keys(16) == [(16, 2, "norm")]  # tested every step: the plain step is never used
  every.close()


def test_non_finite_statistics_never_enter_the_average():
  control = controller_lib.Controller(
    batch_cfg(schedule="norm", eta=0.5, stats_ema=0.9), 1, StubCompiler()
  )
  control.observe(
    1, 10, noisy_metrics(trace=1.0, grad_sq=1.0, groups=2, group_size=8), nonfinite=False
  )
  before = dict(control.state["smoothed"])
  control.observe(2, 20, NoiseSums(np.nan, np.nan), nonfinite=True)
  control.observe(
    3, 30, noisy_metrics(trace=5.0, grad_sq=1.0, groups=2, group_size=8), nonfinite=True
  )  # finite sums of a skipped step are left out too
  assert control.state["smoothed"] == before and control.size == 16
  control.observe(4, 40, noisy_metrics(trace=1000.0, grad_sq=1.0, groups=2, group_size=8))
  assert control.size > 16  # the EMA still moves, so the batch still grows
  restored = controller_lib.Controller(batch_cfg(schedule="norm"), 1, StubCompiler())
  restored.set_state({"size": 16, "smoothed": {"trace": float("nan")}, "history": []})
  assert restored.state["smoothed"] is None  # an old checkpoint's NaN average starts afresh
  control.close()
  restored.close()
