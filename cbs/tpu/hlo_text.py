"""The text of an optimized HLO program read as computations of instructions.

Owns what is read of `compiled.as_text()`: each computation's instructions (result type, opcode,
operands, attributes, integer constants), the byte size of an HLO type, the replica groups of a
collective in any of their three spellings, the computations an instruction calls, and the trip
count of a while loop. Knows nothing of what collectives cost (`collectives`) or of meshes.
"""

import dataclasses
import math
import re

import numpy as np

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


@dataclasses.dataclass
class Instruction:
  """One instruction of a computation, as far as the collectives' count reads it."""

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


def _instruction(root: bool, name: str, rest: str) -> Instruction | None:
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
  return Instruction(
    name,
    type_text,
    opcode.group(1),
    operands,
    rest[end + 1 :],
    root,
    int(literal.group(0)) if literal else None,
  )


def parse(text: str) -> tuple[dict[str, list[Instruction]], str, int]:
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


def trip_count(
  loop: Instruction, caller: list[Instruction], computations: dict[str, list[Instruction]]
) -> int | None:
  """The loop's trip count: the compiler's own note, or `i < N` with i from a constant by 1s."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', loop.attributes)
  if known:
    return int(known.group(1))
  condition = re.search(r"condition=%?([\w.\-]+)", loop.attributes).group(1)
  body_name = loop_body(loop)
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


def _literal(instruction: Instruction | None, scope: dict[str, Instruction]) -> int | None:
  """The integer a scalar constant holds, through copies and bitcasts."""
  while instruction is not None and instruction.opcode in ("copy", "bitcast", "convert"):
    instruction = scope.get(instruction.operands[0]) if instruction.operands else None
  if instruction is None or instruction.opcode != "constant":
    return None
  return instruction.literal


def called(instruction: Instruction, computations: dict[str, list[Instruction]]) -> list[str]:
  """The computations `instruction` calls (a fusion, call, conditional's branches, ...)."""
  return [
    name
    for text in _CALLED.findall(instruction.attributes)
    for name in re.findall(r"[\w.\-]+", text)
    if name in computations
  ]


def loop_body(loop: Instruction) -> str:
  """The name of a while loop's body computation."""
  return re.search(r"body=%?([\w.\-]+)", loop.attributes).group(1)
