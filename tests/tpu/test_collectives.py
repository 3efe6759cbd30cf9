"""Counting a program's collectives from its HLO text, against bytes worked out by hand.

The module below is written the way the TPU compiler writes one (mesh-axis and iota replica
groups, a reduce-scatter as a fused all-reduce and slice, an async collective held by two fusions
under one channel id, a loop counted by its condition, a transfer between slices); the compiled
TPU programs are checked in test_compile_check.py.
"""

import string

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from cbs.tpu import collectives
from cbs.tpu import hlo_text
from cbs.tpu import interconnect

PROGRAM = string.Template("""HloModule step, num_partitions=8

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%reduce_scatter (input: f32[64,32], offset: s32[]) -> f32[8,32] {
  %input = f32[64,32]{1,0:T(8,128)} parameter(0)
  %offset = s32[] parameter(1)
  %all-reduce.1 = f32[64,32]{1,0:T(8,128)} all-reduce(%input), channel_id=3, $iota_all
  ROOT %slice = f32[8,32]{1,0} dynamic-slice(%all-reduce.1, %offset, %offset), $sizes
}

%gather_start (w: f32[8,32]) -> f32[64,32] {
  %w = f32[8,32] parameter(0)
  ROOT %all-gather.1 = f32[64,32]{1,0} all-gather(%w), channel_id=1, $along_model
}

%gather_done (w: f32[8,32]) -> f32[64,32] {
  %w = f32[8,32] parameter(0)
  ROOT %all-gather.2 = f32[64,32]{1,0} all-gather(%w), channel_id=1, $along_model
}

%cond (p: (s32[], f32[8,32])) -> pred[] {
  %p = (s32[], f32[8,32]) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  %n = s32[]{:T(128)} constant(7)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%body (p: (s32[], f32[8,32])) -> (s32[], f32[8,32]) {
  %p = (s32[], f32[8,32]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  %w = f32[8,32] get-tuple-element(%p), index=1
  %start = f32[64,32] fusion(%w), kind=kCustom, calls=%gather_start
  %done = f32[64,32] fusion(%w, /*index=1*/%start), kind=kCustom, calls=%gather_done
  %scattered = f32[8,32] fusion(%done, %i), kind=kCustom, calls=%reduce_scatter
  %permuted = f32[8,32]{1,0} collective-permute(%scattered), channel_id=4, $pairs
  ROOT %t = (s32[], f32[8,32]) tuple(%next, %permuted)
}

ENTRY %main (w: f32[8,32]) -> f32[8,32] {
  %w = f32[8,32] parameter(0)
  %two = s32[] constant(2)
  %first = s32[] copy(%two)
  %init = (s32[], f32[8,32]) tuple(%first, %w)
  %loop = (s32[], f32[8,32]) while(%init), condition=%cond, body=%body
  %out = f32[8,32] get-tuple-element(%loop), index=1
  %total = f32[8,32]{1,0} all-reduce(%out), channel_id=5, $listed_all
  %token = token[] after-all()
  %send = (f32[8,32]{1,0}, u32[], token[]) send(%total, %token), channel_id=6, $between_slices
  ROOT %result = f32[8,32] copy(%total)
}
""").substitute(
  along_model="replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}",
  iota_all="replica_groups=[1,8]<=[8], use_global_device_ids=true, to_apply=%add",
  listed_all="replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add",
  pairs="source_target_pairs={{0,1},{1,0}}",
  between_slices="is_host_transfer=true, frontend_attributes="
  '{_xla_megascale_transfer_type="ALL_GATHER"}',
  sizes="dynamic_slice_sizes={8,32}",
)
TRIPS = 7 - 2  # i from 2 while i < 7
BLOCK = 8 * 32 * 4  # bytes of one chip's f32[8,32]


def by_kind(program: collectives.Program) -> dict:
  totals = {}
  for c in program.collectives:
    key = (c.link, c.kind, len(c.group) or len(c.pairs))
    totals[key] = totals.get(key, 0) + c.bytes * c.executions
  return totals


def test_bytes_follow_the_ring_algorithms_and_the_loop_trip_count():
  program = collectives.count(PROGRAM, slices=2)
  assert program.loops == (TRIPS,) and program.unknown_trip_counts == 0
  assert by_kind(program) == {
    ("ici", "all-gather", 4): TRIPS * 3 / 4 * 8 * BLOCK,  # counted once, not per fusion
    ("ici", "reduce-scatter", 8): TRIPS * 7 / 8 * 8 * BLOCK,  # the all-reduce, then a slice
    ("ici", "collective-permute", 2): TRIPS * BLOCK,
    ("ici", "all-reduce", 8): 2 * 7 / 8 * BLOCK,
    ("dcn", "all-gather", 0): (2 - 1) * BLOCK,  # to the other slice
  }


def test_groups_in_each_spelling():
  groups = lambda text: hlo_text.replica_groups(text, 8)
  assert groups("replica_groups={{0,2},{1,3}}, dimensions={0}") == [[0, 2], [1, 3]]
  assert groups("replica_groups={}, to_apply=%add") == [list(range(8))]
  assert groups("replica_groups=[2,4]<=[4,2]T(1,0), dimensions={0}") == (
    np.arange(8).reshape(4, 2).T.reshape(2, 4).tolist()
  )
  assert groups("replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, x=1") == (
    np.arange(8).reshape(2, 4).T.tolist()
  )
  assert groups("replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0','axis_1'}") == [
    list(range(8))
  ]


def test_traffic_is_placed_on_mesh_axes_and_timed_on_the_ports_it_spans():
  """8 CPU devices as a 2 x 4 mesh (no torus coordinates: the mesh stands in for one)."""
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
  links = interconnect.Links(ici_port=1e9, ici_ports=4, dcn_per_chip=1e8)
  traffic = interconnect.traffic(collectives.count(PROGRAM, slices=2), mesh, links)
  assert traffic["by_link"] == {
    "ici": {
      "all-gather": {"model": TRIPS * 3 / 4 * 8 * BLOCK},
      "reduce-scatter": {"data,model": TRIPS * 7 / 8 * 8 * BLOCK},
      "collective-permute": {"model": TRIPS * BLOCK},
      "all-reduce": {"data,model": 2 * 7 / 8 * BLOCK},
    },
    "dcn": {"all-gather": {"none": BLOCK}},
  }  # one slice of CPU devices: no axis crosses
  ports = {"model": 2, "data,model": 3}  # 4 along model: both neighbours; 2 along data: one
  expected = (
    TRIPS * 3 / 4 * 8 * BLOCK / ports["model"]
    + TRIPS * BLOCK  # a permute: one port
    + (TRIPS * 7 / 8 * 8 + 2 * 7 / 8) * BLOCK / ports["data,model"]
  ) / 1e9
  assert traffic["ici_seconds"] == pytest.approx(expected)
  assert traffic["dcn_seconds"] == pytest.approx(BLOCK / 1e8)
  assert traffic["bytes_per_chip"] == traffic["ici_bytes"] + traffic["dcn_bytes"]
