"""The bytes each chip sends per step in the collectives of a compiled program (its optimized HLO).

Reads the program's text (`compiled.as_text()`) and nothing else: every all-gather, reduce-scatter,
all-reduce, all-to-all and collective-permute (their async start forms too, never the done forms)
in every computation the entry reaches, times the trip counts of the while loops around it (the
microbatch loop, scanned layers, the compiler's windowed-einsum loops). The TPU compiler writes a
reduce-scatter as an all-reduce whose only use is the chip's slice of it; that pair counts as the
reduce-scatter it is. A multislice program is compiled per slice: its transfers between slices are
host transfers of the multislice runtime (`_xla_megascale_transfer_type`), counted as traffic over
the data-center network (DCN), everything else as traffic over the slice's chip interconnect (ICI).

Per chip and execution, over a group of n chips, the bytes are those the bandwidth-optimal (ring)
algorithms send, and each chip receives as many: all-gather (n-1)/n of its result, reduce-scatter
and all-to-all (n-1)/n of their operand, all-reduce 2 (n-1)/n of it (a reduce-scatter then an
all-gather), a permute its operand. Between k slices: an all-gather (k-1) x the chip's piece, an
all-reduce 2 (k-1)/k and a reduce-scatter (k-1)/k of the chip's buffer.

This module knows nothing of meshes or chips; `Collective.group` holds the program's partition ids
for the caller to place.
"""

import dataclasses
import re

from cbs.tpu import hlo_text
from cbs.tpu.hlo_text import Instruction

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DCN = "dcn"
ICI = "ici"

_DCN_KINDS = {
  "ALL_GATHER": "all-gather",
  "ALL_REDUCE": "all-reduce",
  "REDUCE_SCATTER": "reduce-scatter",
  "ALL_TO_ALL": "all-to-all",
}


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of the program: what one chip sends in one execution, and how often it runs."""

  kind: str  # one of KINDS
  link: str  # ICI (within a slice) or DCN (between slices)
  bytes: float  # sent by each chip of the group per execution
  group: tuple[int, ...]  # partition ids of one group (ICI; every group alike under SPMD)
  pairs: tuple[tuple[int, int], ...]  # (source, target) partitions of a permute
  executions: int  # per step: the trip counts of the loops around it multiplied
  channel: int | None = None  # the program's id of this collective


@dataclasses.dataclass(frozen=True)
class Program:
  """The collectives of one compiled program and what the count could not resolve."""

  collectives: tuple[Collective, ...]
  partitions: int  # devices of one program (one slice, in a multislice program)
  loops: tuple[int, ...]  # trip count of every while loop met, in program order
  unknown_trip_counts: int  # loops counted once because their trip count was not found


def _result_bytes(instruction: Instruction) -> float:
  """Bytes of the collective's result (an async start's tuple holds operands, then results)."""
  arrays = hlo_text.array_bytes(instruction.type)
  if instruction.opcode == "all-gather-start":
    return sum(arrays[len(arrays) // 2 :])
  if instruction.opcode == "collective-permute-start":
    return arrays[1] if len(arrays) > 1 else sum(arrays)
  return sum(arrays)


def _is_reduce_scatter(instruction: Instruction, body: list[Instruction]) -> bool:
  """An all-reduce whose result the computation returns only sliced: the compiler's
  reduce-scatter."""
  root = next((i for i in body if i.root), None)
  users = [i for i in body if instruction.name in i.operands]
  return (
    root is not None
    and root.opcode == "dynamic-slice"
    and users == [root]
    and root.operands[0] == instruction.name
  )


def _ici_collective(
  instruction: Instruction, body: list[Instruction], partitions: int
) -> Collective | None:
  kind = instruction.opcode.removesuffix("-start")
  if kind not in KINDS:
    return None
  size = _result_bytes(instruction)
  if kind == "collective-permute":
    pairs = tuple(
      (int(a), int(b))
      for a, b in re.findall(
        r"\{(\d+),(\d+)\}", instruction.attributes.split("source_target_pairs=")[-1]
      )
    )
    return Collective(kind, ICI, size if pairs else 0.0, (), pairs, 1, _channel(instruction))
  group = hlo_text.replica_groups(instruction.attributes, partitions)[0]
  n = len(group)
  if kind == "all-reduce" and _is_reduce_scatter(instruction, body):
    kind = "reduce-scatter"
  factor = {
    "all-gather": (n - 1) / n,
    "all-reduce": 2 * (n - 1) / n,
    "all-to-all": (n - 1) / n,
    "reduce-scatter": n - 1,
  }[kind]
  if kind == "reduce-scatter" and instruction.opcode == "all-reduce":
    factor = (n - 1) / n  # the all-reduce's result is the reduce-scatter's operand
  return Collective(kind, ICI, size * factor, tuple(group), (), 1, _channel(instruction))


def _channel(instruction: Instruction) -> int | None:
  channel = re.search(r"channel_id=(\d+)", instruction.attributes)
  return int(channel.group(1)) if channel else None


def _once(found: list[Collective]) -> list[Collective]:
  """Each collective once: the TPU compiler splits an async collective into start, update and
  done fusions that each hold a copy of it, under one channel id."""
  seen, kept = set(), []
  for c in found:
    if c.channel is None or c.channel not in seen:
      kept.append(c)
    seen.add(c.channel)
  return kept


def _dcn_collective(instruction: Instruction, slices: int) -> Collective | None:
  """A send of the multislice runtime: one chip's share of a collective between slices."""
  tag = re.search(r'_xla_megascale_transfer_type="(\w+)"', instruction.attributes)
  if instruction.opcode != "send" or tag is None:
    return None
  kind = _DCN_KINDS.get(tag.group(1), tag.group(1).lower())
  size = hlo_text.array_bytes(instruction.type)[0]
  k = slices
  factor = {
    "all-gather": k - 1,
    "all-reduce": 2 * (k - 1) / k,
    "reduce-scatter": (k - 1) / k,
    "all-to-all": (k - 1) / k,
  }.get(kind, 1.0)
  return Collective(kind, DCN, size * factor, (), (), 1)


def count(text: str, slices: int = 1) -> Program:
  """The collectives of a compiled program's HLO text, with their executions per step."""
  computations, entry, partitions = hlo_text.parse(text)
  loops, unknown = [], [0]
  memo = {}

  def walk(name: str) -> list[Collective]:
    if name in memo:
      return memo[name]
    body = computations.get(name, [])
    found = []
    for instruction in body:
      one = _dcn_collective(instruction, slices) or _ici_collective(instruction, body, partitions)
      if one is not None:
        found.append(one)
      if instruction.opcode == "while":
        trips = hlo_text.trip_count(instruction, body, computations)
        loops.append(trips if trips is not None else 1)
        unknown[0] += trips is None
        inner = walk(hlo_text.loop_body(instruction))
        found += [dataclasses.replace(c, executions=c.executions * (trips or 1)) for c in inner]
        continue
      called = hlo_text.called(instruction, computations)
      if instruction.opcode == "conditional":  # one branch runs: the one sending the most
        branches = [walk(n) for n in called]
        found += max(branches, key=lambda b: sum(c.bytes * c.executions for c in b), default=[])
      else:
        for callee in called:
          found += walk(callee)
    memo[name] = _once(found)
    return memo[name]

  return Program(tuple(walk(entry)), partitions, tuple(loops), unknown[0])
