"""The parts a resume checks before orbax reads any array, on files written by hand.

A checkpoint's arrays against the model's (`compatibility`: the first difference in one line) and
each host's data position (`host_positions`: this host's own file, the host count it was written
with). The restores around them are tested on real runs in tests/integration/test_restore.py.
"""

import json

import jax
import numpy as np
import pytest

from cbs.checkpoint import compatibility
from cbs.checkpoint import host_positions
from cbs.checkpoint.errors import HostCountError


def arrays(**shapes) -> dict:
  """'/'-joined key -> an abstract float32 array of that shape (`__` stands for `/`)."""
  return {
    key.replace("__", "/"): jax.ShapeDtypeStruct(shape, np.float32) for key, shape in shapes.items()
  }


MODEL = arrays(params__embed=(8, 4), params__block_0__w=(4, 4), opt__mu__params__block_0__w=(4, 4))


def test_arrays_that_fit_have_no_mismatch():
  assert compatibility.describe_mismatch(dict(MODEL), MODEL) == ""


def test_an_extra_layer_is_named_once_at_its_first_missing_component():
  stored = {
    **MODEL,
    **arrays(params__block_1__w=(4, 4), opt__mu__params__block_1__w=(4, 4)),
  }
  assert compatibility.describe_mismatch(stored, MODEL) == (
    "it holds params/block_1 where the model has nothing"
  )
  assert compatibility.describe_mismatch(MODEL, stored) == (
    "it holds nothing more where the model has params/block_1"
  )


def test_more_than_two_differences_are_counted():
  stored = {**MODEL, **arrays(params__a=(1,), params__b=(1,), params__c=(1,))}
  assert compatibility.describe_mismatch(stored, MODEL) == (
    "it holds params/a, params/b (+1 more) where the model has nothing"
  )


def test_a_shape_or_dtype_difference_names_the_key_and_both():
  stored = {**MODEL, "params/embed": jax.ShapeDtypeStruct((16, 4), np.float32)}
  assert compatibility.describe_mismatch(stored, MODEL) == (
    "params/embed is float32[16, 4] in it and float32[8, 4] in the model"
  )
  stored = {**MODEL, "params/embed": jax.ShapeDtypeStruct((8, 4), jax.numpy.bfloat16)}
  assert compatibility.describe_mismatch(stored, MODEL) == (
    "params/embed is bfloat16[8, 4] in it and float32[8, 4] in the model"
  )


def step_dir(tmp_path, hosts: list[str]):
  """A step directory whose `data/` item holds files of these names (one host's position each)."""
  data = tmp_path / "7" / "data"
  data.mkdir(parents=True)
  for name in hosts:
    (data / name).write_text(json.dumps({"position": name}))
  return tmp_path / "7"


def test_this_hosts_position_is_found_and_read(tmp_path):
  path = step_dir(tmp_path, ["process_0-of-1.json"])
  host_positions.check_own_file(path, 7)
  restored = host_positions.HostStateHandler().restore(path / "data")
  assert restored == {"position": "process_0-of-1.json"}


def test_a_missing_position_of_this_host_is_damage(tmp_path):
  path = step_dir(tmp_path, ["other.json"])
  with pytest.raises(FileNotFoundError, match=r"checkpoint 7 has no process_0-of-1\.json"):
    host_positions.check_own_file(path, 7)
  with pytest.raises(FileNotFoundError, match="checkpoint 7 holds no per-host data position"):
    host_positions.HostStateHandler().restore(path / "data")


def test_positions_of_another_host_count_are_refused_naming_both(tmp_path):
  path = step_dir(tmp_path, ["process_0-of-2.json", "process_1-of-2.json"])
  host_positions.check_own_file(path, 7)  # every host refuses alike, in the handler
  with pytest.raises(
    HostCountError, match=r"^checkpoint 7 was written by 2 host\(s\) and this run has 1: "
  ):
    host_positions.HostStateHandler().restore(path / "data")


def test_a_step_without_a_data_item_needs_the_position_in_its_progress(tmp_path):
  progress = tmp_path / "7" / "progress"
  progress.mkdir(parents=True)
  (progress / "metadata").write_text(json.dumps({"step": 7}))
  with pytest.raises(FileNotFoundError, match="checkpoint 7 has no data/ item"):
    host_positions.check_own_file(tmp_path / "7", 7)
  (progress / "metadata").write_text(json.dumps({"step": 7, "data": {"position": 3}}))
  host_positions.check_own_file(tmp_path / "7", 7)  # an older checkpoint: the record has it
