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
import math
import re

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DCN = "dcn"
ICI = "ici"

_BYTES = {
  "pred": 1,
  "s4": 0.5,
  "u4": 0.5,
  "s8": 1,
  "u8": 1,
  "s16": 2,
  "u16": 2,
  "f16": 2,
  "bf16": 2,
  "s32": 4,
  "u32": 4,
  "f32": 4,
  "s64": 8,
  "u64": 8,
  "f64": 8,
  "c64": 8,
  "c128": 16,
  "f8e4m3fn": 1,
  "f8e5m2": 1,
  "f8e4m3b11fnuz": 1,
  "f8e4m3fnuz": 1,
  "f8e5m2fnuz": 1,
}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\{$")
_INSTRUCTION = re.compile(r"^\s+(ROOT )?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"([\w\-]+)\(")
_NAME = re.compile(r"%([\w.\-]+)")
_CALLED = re.compile(
  r"\b(?:calls|branch_computations|true_computation|false_computation|"
  r"called_computations)=(\{[^}]*\}|%?[\w.\-]+)"
)
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


@dataclasses.dataclass
class _Instruction:
  name: str
  type: str
  opcode: str
  operands: list[str]
  attributes: str
  root: bool
  literal: int | None  # the value of an integer scalar constant


def array_bytes(type_text: str) -> list[float]:
  """Bytes of each array in an HLO type (a tuple lists several)."""
  return [
    _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    for dtype, dims in _ARRAY.findall(type_text)
  ]


def _closing(text: str, start: int) -> int:
  """Index of the bracket closing the one at `start`."""
  depth = 0
  for i in range(start, len(text)):
    depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
      return i
  raise ValueError(f"unbalanced HLO text: {text[start : start + 80]!r}")


def _instruction(root: bool, name: str, rest: str) -> _Instruction | None:
  if rest.startswith("("):
    end = _closing(rest, 0)
    type_text, rest = rest[: end + 1], rest[end + 2 :]
  else:
    type_text, _, rest = rest.partition(" ")
  opcode = _OPCODE.match(rest)
  if opcode is None:
    return None
  start = opcode.end() - 1
  end = _closing(rest, start)
  inside = rest[start + 1 : end]
  literal = re.fullmatch(r"-?\d+", inside.strip()) if opcode.group(1) == "constant" else None
  operands = _NAME.findall(re.sub(r"/\*.*?\*/", "", inside))
  return _Instruction(
    name,
    type_text,
    opcode.group(1),
    operands,
    rest[end + 1 :],
    root,
    int(literal.group(0)) if literal else None,
  )


def parse(text: str) -> tuple[dict[str, list[_Instruction]], str, int]:
  """Computations by name, the entry's name, and the number of partitions."""
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = computations.setdefault(header.group(2), [])
      entry = header.group(2) if header.group(1) else entry
      continue
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      instruction = _instruction(bool(match.group(1)), match.group(2), match.group(3))
      if instruction is not None:
        current.append(instruction)
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  partitions = re.search(r"num_partitions=(\d+)", text)
  return computations, entry, int(partitions.group(1)) if partitions else 1


def _iota_groups(shape: list[int], dims: list[int], perm: list[int] | None) -> list[list[int]]:
  """`[groups,size]<=[dims]T(perm)`: iota over `dims`, transposed by `perm`, reshaped."""
  ids = np.arange(math.prod(dims)).reshape(dims)
  ids = (ids.transpose(perm) if perm else ids).ravel().tolist()
  size = shape[-1]
  return [ids[i : i + size] for i in range(0, len(ids), size)]


def _mesh_groups(axes: list[tuple[str, int]], reduced: list[str]) -> list[list[int]]:
  """`mesh['a'=4,'b'=2] {'a'}`: devices numbered in order over the mesh, grouped along `reduced`."""
  sizes = [size for _, size in axes]
  groups = {}
  for device in range(math.prod(sizes)):
    coords = np.unravel_index(device, sizes)
    key = tuple(c for (name, _), c in zip(axes, coords) if name not in reduced)
    groups.setdefault(key, []).append(device)
  return list(groups.values())


def replica_groups(attributes: str, partitions: int) -> list[list[int]]:
  """The groups of a collective, in any of the HLO text's three spellings."""
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", attributes)
  if mesh:
    axes = [(name, int(size)) for name, size in re.findall(r"'([^']+)'=(\d+)", mesh.group(1))]
    return _mesh_groups(axes, re.findall(r"'([^']+)'", mesh.group(2)))
  iota = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", attributes)
  if iota:
    numbers = lambda s: [int(x) for x in s.split(",")] if s else None
    return _iota_groups(numbers(iota.group(1)), numbers(iota.group(2)), numbers(iota.group(3)))
  listed = re.search(r"replica_groups=\{((?:\{[\d,]*\},?)*)\}", attributes)
  if listed is None:
    raise ValueError(f"replica groups not understood: {attributes[:200]!r}")
  groups = [
    [int(x) for x in g.split(",") if x] for g in re.findall(r"\{([\d,]*)\}", listed.group(1))
  ]
  return groups or [list(range(partitions))]


def _result_bytes(instruction: _Instruction) -> float:
  """Bytes of the collective's result (an async start's tuple holds operands, then results)."""
  arrays = array_bytes(instruction.type)
  if instruction.opcode == "all-gather-start":
    return sum(arrays[len(arrays) // 2 :])
  if instruction.opcode == "collective-permute-start":
    return arrays[1] if len(arrays) > 1 else sum(arrays)
  return sum(arrays)


def _is_reduce_scatter(instruction: _Instruction, body: list[_Instruction]) -> bool:
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
  instruction: _Instruction, body: list[_Instruction], partitions: int
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
  group = replica_groups(instruction.attributes, partitions)[0]
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


def _channel(instruction: _Instruction) -> int | None:
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


def _dcn_collective(instruction: _Instruction, slices: int) -> Collective | None:
  """A send of the multislice runtime: one chip's share of a collective between slices."""
  tag = re.search(r'_xla_megascale_transfer_type="(\w+)"', instruction.attributes)
  if instruction.opcode != "send" or tag is None:
    return None
  kind = _DCN_KINDS.get(tag.group(1), tag.group(1).lower())
  size = array_bytes(instruction.type)[0]
  k = slices
  factor = {
    "all-gather": k - 1,
    "all-reduce": 2 * (k - 1) / k,
    "reduce-scatter": (k - 1) / k,
    "all-to-all": (k - 1) / k,
  }.get(kind, 1.0)
  return Collective(kind, DCN, size * factor, (), (), 1)


def trip_count(
  loop: _Instruction, caller: list[_Instruction], computations: dict[str, list[_Instruction]]
) -> int | None:
  """The loop's trip count: the compiler's own note, or `i < N` with i from a constant by 1s."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', loop.attributes)
  if known:
    return int(known.group(1))
  condition = re.search(r"condition=%?([\w.\-]+)", loop.attributes).group(1)
  body_name = re.search(r"body=%?([\w.\-]+)", loop.attributes).group(1)
  cond = {i.name: i for i in computations[condition]}
  root = next(i for i in computations[condition] if i.root)
  direction = re.search(r"direction=(\w+)", root.attributes)
  if root.opcode != "compare" or direction is None or len(root.operands) != 2:
    return None
  index_of = lambda i: re.search(r"index=(\d+)", i.attributes)
  counter, bound = (cond.get(name) for name in root.operands)
  if counter is None or bound is None or counter.opcode != "get-tuple-element":
    return None
  limit = _literal(bound, cond)
  index = int(index_of(counter).group(1))
  callers = {i.name: i for i in caller}
  start = callers.get(loop.operands[0])
  if start is None or start.opcode != "tuple" or limit is None:
    return None
  first = _literal(callers.get(start.operands[index]), callers)
  body = {i.name: i for i in computations[body_name]}
  body_root = next(i for i in computations[body_name] if i.root)
  step = 1
  update = body.get(body_root.operands[index]) if body_root.opcode == "tuple" else None
  if update is not None and update.opcode == "add":
    steps = [_literal(body.get(name), body) for name in update.operands]
    step = next((s for s in steps if s is not None), 1)
  if first is None or step <= 0:
    return None
  span = limit - first + (1 if direction.group(1) == "LE" else 0)
  if direction.group(1) not in ("LT", "LE", "NE"):
    return None
  return max(0, math.ceil(span / step))


def _literal(instruction: _Instruction | None, scope: dict[str, _Instruction]) -> int | None:
  """The integer a scalar constant holds, through copies and bitcasts."""
  while instruction is not None and instruction.opcode in ("copy", "bitcast", "convert"):
    instruction = scope.get(instruction.operands[0]) if instruction.operands else None
  if instruction is None or instruction.opcode != "constant":
    return None
  return instruction.literal


def count(text: str, slices: int = 1) -> Program:
  """The collectives of a compiled program's HLO text, with their executions per step."""
  computations, entry, partitions = parse(text)
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
        trips = trip_count(instruction, body, computations)
        loops.append(trips if trips is not None else 1)
        unknown[0] += trips is None
        inner = walk(re.search(r"body=%?([\w.\-]+)", instruction.attributes).group(1))
        found += [dataclasses.replace(c, executions=c.executions * (trips or 1)) for c in inner]
        continue
      called = [
        n
        for text in _CALLED.findall(instruction.attributes)
        for n in re.findall(r"[\w.\-]+", text)
        if n in computations
      ]
      if instruction.opcode == "conditional":  # one branch runs: the one sending the most
        branches = [walk(n) for n in called]
        found += max(branches, key=lambda b: sum(c.bytes * c.executions for c in b), default=[])
      else:
        for callee in called:
          found += walk(callee)
    memo[name] = _once(found)
    return memo[name]

  return Program(tuple(walk(entry)), partitions, tuple(loops), unknown[0])
