"""A growing file: appended to in place locally, one new part per flush on an object store."""

from etils import epath

from cbs import object_store


def test_urls_are_object_stores_and_paths_are_not(tmp_path):
  assert object_store.is_object_store("gs://bucket/run")
  assert object_store.is_object_store(epath.Path("s3://bucket") / "run")
  assert not object_store.is_object_store(tmp_path / "run")


def test_a_local_file_is_appended_to(tmp_path):
  grown = object_store.GrowingFile(tmp_path / "f", lambda n: tmp_path / "parts" / str(n))
  grown.write(b"ab")
  grown.write(b"cd")
  assert (tmp_path / "f").read_bytes() == b"abcd" and not (tmp_path / "parts").exists()


def test_on_an_object_store_each_write_is_a_new_part_and_nothing_is_rewritten(
  tmp_path, monkeypatch
):
  monkeypatch.setattr(object_store, "is_object_store", lambda path: True)
  grown = object_store.GrowingFile(tmp_path / "f", lambda n: tmp_path / "parts" / f"{n:02d}", 7)
  for chunk in (b"ab", b"cde", b"f"):
    grown.write(chunk)
  parts = sorted((tmp_path / "parts").iterdir())
  assert [p.name for p in parts] == ["07", "08", "09"]  # numbered on from the first free part
  assert [p.read_bytes() for p in parts] == [b"ab", b"cde", b"f"]  # each holds its write alone
  assert not (tmp_path / "f").exists()
