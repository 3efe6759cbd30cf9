"""Converts a run's checkpoints between unrolled and scanned blocks (`model.scan_layers`).

    python -m cbs.convert_checkpoint --workdir=DIR --scan_layers=True

Both layouts compute the same function from the same numbers: the scanned one stacks block i's
arrays at index i of a leading `layers` axis. Every checkpoint in `DIR/checkpoints` is rewritten
(parameters, optimizer moments and weight averages alike, every other item copied as it is), the
originals are kept in `DIR/checkpoints.<old layout>`, and `DIR/config.json` records the new layout,
so the run resumes with `--config.model.scan_layers=...` and nothing else. Runs on one host; the
arrays pass through its memory one checkpoint at a time.
"""

import json
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cbs.checkpoint import run_dir

_UNROLLED, _SCANNED = "blocks", "layers"  # the state keys of the two layouts (cbs.models)


def layout_of(keys: set[str]) -> str | None:
  """'unrolled' or 'scanned' for a checkpoint's '/'-joined array keys, None if it has no blocks."""
  if any(k.startswith(f"params/{_SCANNED}/") for k in keys):
    return "scanned"
  if any(k.startswith(f"params/{_UNROLLED}/") for k in keys):
    return "unrolled"
  return None


def convert(tree: Any, scan_layers: bool) -> Any:
  """The state tree (nested dicts and lists of arrays) in the other layout, wherever blocks are."""
  if isinstance(tree, list):
    return [convert(t, scan_layers) for t in tree]
  if not isinstance(tree, dict):
    return tree
  out = {k: convert(v, scan_layers) for k, v in tree.items() if k not in (_UNROLLED, _SCANNED)}
  if scan_layers and _UNROLLED in tree:
    blocks = [tree[_UNROLLED][k] for k in sorted(tree[_UNROLLED], key=int)]
    out[_SCANNED] = jax.tree.map(lambda *layers: np.stack(layers), *blocks)
  elif not scan_layers and _SCANNED in tree:
    num_layers = jax.tree.leaves(tree[_SCANNED])[0].shape[0]
    out[_UNROLLED] = {
      str(i): jax.tree.map(lambda a, i=i: a[i], tree[_SCANNED]) for i in range(num_layers)
    }
  else:
    out.update({k: tree[k] for k in (_UNROLLED, _SCANNED) if k in tree})
  return out


def read_state(path: epath.Path) -> Any:
  """A saved state as host numpy arrays, whatever devices it was written from."""
  metadata = ocp.StandardCheckpointHandler().metadata(path).tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  with ocp.PyTreeCheckpointer() as reader:
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def _copy(src: epath.Path, dst: epath.Path) -> None:
  if src.is_dir():
    dst.mkdir(parents=True)
    for child in src.iterdir():
      _copy(child, dst / child.name)
  else:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.copy(dst)


def _set_scan_layers(config_file: epath.Path, scan_layers: bool) -> None:
  """Rewrites a checkpoint's JSON config with the new layout."""
  data = json.loads(config_file.read_text())
  data["model"]["scan_layers"] = scan_layers
  config_file.write_text(json.dumps(data))


def convert_workdir(workdir: epath.PathLike, scan_layers: bool) -> list[int]:
  """Rewrites every checkpoint of the run in `workdir`; returns their steps.

  Raises ValueError (one line) if there is nothing to convert or it is already in that layout.
  """
  workdir = epath.Path(workdir)
  source, target = workdir / "checkpoints", workdir / "checkpoints.converting"
  wanted, other = ("scanned", "unrolled") if scan_layers else ("unrolled", "scanned")
  backup = workdir / f"checkpoints.{other}"
  names = [p.name for p in source.iterdir()] if source.exists() else []
  steps = sorted(int(name) for name in names if name.isdigit())
  if not steps:
    raise ValueError(f"--workdir={workdir} holds no checkpoints ({source})")
  if backup.exists():
    raise ValueError(f"{backup} exists (an earlier conversion): move it away first")
  if target.exists():  # left by a conversion that was interrupted; the originals are untouched
    target.rmtree()
  for step in steps:
    state_dir = source / str(step) / "state"
    state = read_state(state_dir)
    found = layout_of(set(_flat_keys(state)))
    if found == wanted:
      raise ValueError(f"checkpoint {step} in {source} already has {wanted} blocks")
    if found is None:
      raise ValueError(f"checkpoint {step} in {source} holds no transformer blocks")
    for item in (source / str(step)).iterdir():
      if item.name != "state":
        _copy(item, target / str(step) / item.name)
    with ocp.StandardCheckpointer() as writer:
      writer.save(target / str(step) / "state", convert(state, scan_layers))
    if (target / str(step) / "config" / "metadata").exists():
      _set_scan_layers(target / str(step) / "config" / "metadata", scan_layers)
  source.rename(backup)
  target.rename(source)
  if run_dir.has_run(workdir):
    info = run_dir.read_run_info(workdir)
    info.config["model"]["scan_layers"] = scan_layers
    run_dir.write_run_info(workdir, info)
  return steps


def _flat_keys(tree: Any) -> list[str]:
  return [
    "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def main(argv: list[str]) -> int:
  """`--workdir=DIR --scan_layers=True|False`; a bad argument is one line on stderr, exit code 2."""
  args = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--") and "=" in a)
  scan_layers = {"true": True, "false": False}.get(args.get("scan_layers", "").lower())
  if set(args) != {"workdir", "scan_layers"} or len(args) != len(argv) or scan_layers is None:
    print(
      f"cbs.convert_checkpoint: got {' '.join(argv) or 'no arguments'}; usage: python -m "
      "cbs.convert_checkpoint --workdir=DIR --scan_layers=True|False",
      file=sys.stderr,
    )
    return 2
  try:
    steps = convert_workdir(args["workdir"], scan_layers)
  except ValueError as e:
    print(f"cbs.convert_checkpoint: {e}", file=sys.stderr)
    return 2
  new, old = ("scanned", "unrolled") if scan_layers else ("unrolled", "scanned")
  print(
    f"converted checkpoints {', '.join(map(str, steps))} in {args['workdir']} to {new} "
    f"blocks; the originals are in {epath.Path(args['workdir']) / f'checkpoints.{old}'}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
