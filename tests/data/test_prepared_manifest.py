"""Prepared shards that disagree with their manifest are refused when opened, naming the shard."""

import pathlib
import shutil

import pytest

from cbs.data import prepare
from cbs.data import prepared
from cbs.data import stream
from tests.data import corpus
from tests.helpers import last_line
from tests.helpers import main_flags
from tests.helpers import run_main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """12 training shards of 8, ..., 8, 2 records (256 tokens each) and 6 held-out ones."""
  directory = tmp_path_factory.mktemp("prepared")
  files = corpus.write_jsonl(directory, files=3, per_file=100)
  prepare.prepare(
    files, "byte", str(directory / "out"), record_tokens=256, shard_tokens=2048, workers=1
  )
  return directory / "out"


def damaged(shards: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  copy = tmp_path / "copy"
  shutil.copytree(shards, copy)
  return copy


def test_intact_shards_open(shards):
  assert prepared.PreparedSplit(str(shards), "train").tokens == 23036


def swapped(shards: pathlib.Path, tmp_path: pathlib.Path, first: str, second: str) -> pathlib.Path:
  """A copy whose shards `first` and `second` have traded places."""
  copy = damaged(shards, tmp_path)
  (copy / first).rename(copy / "swap")
  (copy / second).rename(copy / first)
  (copy / "swap").rename(copy / second)
  return copy


def test_a_swapped_shard_is_named(shards, tmp_path):
  copy = swapped(shards, tmp_path, "train-00011.array_record", "train-00003.array_record")
  with pytest.raises(
    stream.DataError,
    match=r"^prepared shard .*/train-00003.array_record holds 2 "
    r"records where its manifest.json needs 8 \(90 in the split's 12 shards\): it "
    r"was cut short, replaced or swapped$",
  ):
    prepared.PreparedSplit(str(copy), "train")


def test_full_shards_swapped_with_each_other_are_named(shards, tmp_path):
  """Equal record counts: only the first records' digests in the manifest tell them apart."""
  copy = swapped(shards, tmp_path, "train-00005.array_record", "train-00003.array_record")
  with pytest.raises(
    stream.DataError,
    match=r"^prepared shard .*/train-00003.array_record does "
    r"not start with the record its manifest.json lists for it: it was replaced "
    r"or swapped with another shard$",
  ):
    prepared.PreparedSplit(str(copy), "train")


def test_a_shard_of_another_split_is_named(shards, tmp_path):
  copy = damaged(shards, tmp_path)
  shutil.copy(copy / "validation-00005.array_record", copy / "train-00011.array_record")
  with pytest.raises(
    stream.DataError,
    match=r"train-00011.array_record holds \d records where its "
    r"manifest.json needs 2 ",
  ):
    prepared.PreparedSplit(str(copy), "train")


def test_a_truncated_shard_is_refused_in_one_line_through_the_command_line(shards, tmp_path):
  copy = damaged(shards, tmp_path)
  shard = copy / "train-00001.array_record"
  shard.write_bytes(shard.read_bytes()[:65536])  # cut short, as by a full disk or a partial copy
  workdir = tmp_path / "run"
  refused = run_main(
    main_flags(workdir, {"mesh.data": 1, "data.source": "prepared", "data.prepared_dir": copy})
  )
  assert refused.returncode == 2
  assert last_line(refused.stderr) == (
    f"cbs: bad data: prepared shard {shard} cannot be read as ArrayRecord (RuntimeError): it is "
    "damaged or cut short"
  )
  assert not workdir.exists()
