"""Whether a checkpoint's arrays fit the configured model, read from its metadata alone.

Owns the comparison of a checkpoint's array tree (keys, shapes, dtypes) with the model's abstract
state and the one-line description of the first difference. It reads no array data and must not
restore anything.
"""

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


def mismatch_with(state_dir: epath.Path, abstract_state: Any) -> tuple[str, set[str]]:
  """How the arrays stored in `state_dir` differ from `abstract_state` ("" if they fit), and
  the stored keys."""
  stored = _flat(ocp.StandardCheckpointHandler().metadata(state_dir).tree)
  wanted = _flat(ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
  return describe_mismatch(stored, wanted), set(stored)


def _flat(tree: Any) -> dict[str, Any]:
  """'/'-joined key path -> leaf of a serialized (dicts and lists) tree."""
  return {
    "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def describe_mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
  """How a checkpoint's arrays differ from the model's (empty if they fit): keys, shapes, dtypes."""
  only_stored = _diverging(set(stored), set(wanted))
  only_wanted = _diverging(set(wanted), set(stored))
  if only_stored or only_wanted:
    return (
      f"it holds {_some(only_stored) or 'nothing more'} where the model has "
      f"{_some(only_wanted) or 'nothing'}"
    )
  for key in sorted(wanted):
    have = (tuple(stored[key].shape), np.dtype(stored[key].dtype))
    want = (tuple(wanted[key].shape), np.dtype(wanted[key].dtype))
    if have != want:
      return f"{key} is {have[1]}{list(have[0])} in it and {want[1]}{list(want[0])} in the model"
  return ""


def _diverging(keys: set[str], others: set[str]) -> list[str]:
  """Each key in `keys` but not `others`, cut after its first component `others` lacks."""
  prefixes = {"/".join(k.split("/")[:i]) for k in others for i in range(1, k.count("/") + 2)}
  out = set()
  for key in keys - others:
    parts = key.split("/")
    cut = next(i for i in range(1, len(parts) + 1) if "/".join(parts[:i]) not in prefixes)
    out.add("/".join(parts[:cut]))
  params = sorted(k for k in out if k.startswith("params"))  # the same shows in opt and ewa
  return params or sorted(out)


def _some(names: list[str]) -> str:
  return ", ".join(names[:2]) + (f" (+{len(names) - 2} more)" if len(names) > 2 else "")
