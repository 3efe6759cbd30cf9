"""Text files, TFDS and seqio sources: host sharding, restarts, vocabularies and clear errors."""

import json
import pathlib

import numpy as np
import pytest

from cbs import data as data_lib
from cbs.data import seqio_source
from cbs.data import text_files
from cbs.data import tfds_source
from cbs.data import vocab as vocab_lib
from configs import tiny
from tests.data import corpus


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


# ---- text files -----------------------------------------------------------------------------------


def texts(documents):
  return [text for _, text in documents]


@pytest.mark.parametrize("piece_bytes", [text_files.JSONL_PIECE_BYTES, 1000])
def test_two_hosts_read_disjoint_documents_that_cover_each_epoch(jsonl_files, piece_bytes):
  paths = text_files.resolve(jsonl_files)
  hosts = [
    text_files.TextFiles(
      paths, "text", seed=3, process_index=h, process_count=2, jsonl_piece_bytes=piece_bytes
    )
    for h in range(2)
  ]
  epoch0 = [
    [text for cursor, text in take(host.documents(), 150) if cursor[0] == 0] for host in hosts
  ]
  assert not set(epoch0[0]) & set(epoch0[1])
  assert sorted(epoch0[0] + epoch0[1]) == sorted(corpus.document(i) for i in range(150))
  # The next epoch visits the pieces in another seeded order.
  epoch1 = [text for cursor, text in take(hosts[0].documents(), 300) if cursor[0] == 1]
  assert epoch1[: len(epoch0[0])] != epoch0[0]


@pytest.mark.parametrize("piece_bytes", [text_files.JSONL_PIECE_BYTES, 1000])
def test_restarting_at_a_cursor_continues_with_that_document(jsonl_files, piece_bytes):
  files = text_files.TextFiles(
    text_files.resolve(jsonl_files), "text", seed=0, jsonl_piece_bytes=piece_bytes
  )
  reference = take(files.documents(), 170)  # into the second epoch
  for k in (0, 1, 40, 99, 151):
    assert take(files.documents(reference[k][0]), 19) == reference[k : k + 19]


def test_txt_files_are_one_document_each(tmp_path):
  for i in range(2):
    (tmp_path / f"{i}.txt").write_text(f"first line {i}\nsecond line {i}\n")
  docs = list(text_files.read_documents(text_files.resolve(str(tmp_path / "*.txt")), "text"))
  assert docs == ["first line 0\nsecond line 0\n", "first line 1\nsecond line 1\n"]


@pytest.mark.parametrize(
  "make_files,message",
  [
    (lambda d: [str(d / "none*.jsonl")], "matches no file"),
    (lambda d: [str(d / "x.csv")], "matches no file"),
    (lambda d: [str(_write(d / "y.csv", "a"))], "allowed suffixes are .txt, .jsonl, .parquet"),
    (lambda d: [], "data.files is empty"),
  ],
)
def test_bad_file_lists_are_named(tmp_path, make_files, message):
  with pytest.raises(ValueError, match=message):
    text_files.resolve(make_files(tmp_path))


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  return path


def test_jsonl_without_the_text_field_names_file_line_and_fields(tmp_path):
  path = _write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"body": "no text"}\n')
  with pytest.raises(ValueError, match=r"a.jsonl:2 has no text field 'text'.*fields: body"):
    list(text_files.read_documents([path], "text"))


# ---- TFDS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_tfds_hosts_split_the_data_and_restart_mid_way(
  tfds_dir, tfds_array_record_dir, file_format
):
  data_dir = tfds_dir if file_format == "tfrecord" else tfds_array_record_dir
  hosts = [
    tfds_source.TfdsDocuments("tiny_text:1.0.0", str(data_dir), "train", "text", h, 2)
    for h in range(2)
  ]
  assert all(host.random_access == (file_format == "array_record") for host in hosts)
  halves = [list(host.documents(epochs=1)) for host in hosts]
  assert len(halves[0]) == len(halves[1]) == 200
  assert set(texts(halves[0])) | set(texts(halves[1])) == {corpus.document(i) for i in range(400)}
  resumed = take(hosts[1].documents(halves[1][150][0]), 60)
  assert texts(resumed) == texts(halves[1][150:] + halves[1][:10])
  assert resumed[50][0] == [1, 0]


@pytest.mark.parametrize(
  "name,split,field,message",
  [
    ("no_such_dataset", "train", "text", "data.tfds_name='no_such_dataset' cannot be loaded"),
    (
      "tiny_text:1.0.0",
      "test",
      "text",
      "split 'test' is not in 'tiny_text:1.0.0'; splits: train, validation",
    ),
    ("tiny_text:1.0.0", "train", "body", "data.text_field='body' is not a feature"),
  ],
)
def test_tfds_errors_name_the_problem(tfds_dir, name, split, field, message):
  with pytest.raises(ValueError, match=message):
    tfds_source.TfdsDocuments(name, str(tfds_dir), split, field)


def test_unprepared_tfds_directory_is_reported(tmp_path):
  with pytest.raises(ValueError, match="data.tfds_name='tiny_text:1.0.0'"):
    tfds_source.TfdsDocuments("tiny_text:1.0.0", str(tmp_path), "train", "text")


# ---- vocabularies and seqio -----------------------------------------------------------------------


def test_sentencepiece_vocabulary_trained_here_round_trips(spm_model):
  vocabulary = vocab_lib.make(spm_model)
  text = corpus.document(7)
  assert vocabulary.decode(vocabulary.encode(text)) == text
  assert vocabulary.eos_id == 1 and vocab_lib.padded_size(vocabulary) % 128 == 0


@pytest.mark.parametrize(
  "spec,message",
  [
    ("/no/such/spm.model", "neither 'byte' nor an existing"),
    ("corrupt", "not a readable SentencePiece model"),
  ],
)
def test_unreadable_vocabularies_are_named(tmp_path, spec, message):
  if spec == "corrupt":
    spec = str(_write(tmp_path / "bad.model", "not a model"))
  with pytest.raises(ValueError, match=message):
    vocab_lib.make(spec)


def test_c4_style_seqio_task_tokenizes_the_tfds_text_in_order(tfds_dir, spm_model):
  name = seqio_source.register_c4(spm_model, "tiny_text:1.0.0", str(tfds_dir))
  task = seqio_source.task(name)
  documents = seqio_source.SeqioDocuments(task, "validation")
  vocabulary = vocab_lib.make(spm_model)
  texts = tfds_source.TfdsDocuments("tiny_text:1.0.0", str(tfds_dir), "validation", "text")
  for (_, ids), (_, text) in zip(documents.documents(epochs=1), texts.documents(epochs=1)):
    np.testing.assert_array_equal(ids, vocabulary.encode(text))
  cursor, ids = take(documents.documents(), 11)[10]
  assert cursor == [10]
  np.testing.assert_array_equal(take(documents.documents(cursor), 1)[0][1], ids)


def test_unknown_seqio_task_is_named():
  with pytest.raises(ValueError, match="data.seqio_task='nope' is not a registered"):
    seqio_source.task("nope")


# ---- data.make for each source ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["text_files", "tfds", "seqio"])
def test_each_source_gives_batches_a_held_out_set_and_resumes(
  source, jsonl_files, tfds_dir, spm_model
):
  config = tiny.get_config()
  config.data.update(
    dict(
      source=source,
      files=",".join(jsonl_files),
      vocab=spm_model,
      tfds_name="tiny_text:1.0.0",
      tfds_data_dir=str(tfds_dir),
    )
  )
  config.eval.tokens, config.eval.batch_size = 512, 8
  data = data_lib.make(config, 0, 1)
  batch = data.train.next_batch(4)
  assert batch["inputs"].shape == (4, 64) and batch["weights"].all()
  assert data.vocab_size == 128
  assert sum(b["inputs"].shape[0] for b in data.eval_batches) == 8
  state = json.loads(json.dumps(data.train.get_state()))  # as a checkpoint stores it
  expected = data.train.next_batch(8)
  data.train.close()
  resumed = data_lib.make(config, 0, 1)
  resumed.train.set_state(state)
  np.testing.assert_array_equal(resumed.train.next_batch(8)["inputs"], expected["inputs"])
  resumed.train.close()


def test_single_file_without_eval_files_is_refused(jsonl_files):
  config = tiny.get_config()
  config.data.update(dict(source="text_files", files=jsonl_files[0]))
  with pytest.raises(ValueError, match="is a single file; set data.eval_files"):
    data_lib.make(config, 0, 1)
