"""Session-wide offline data: a prepared TFDS dataset and a SentencePiece model trained here."""

import pytest

from cbs.data import train_vocab
from tests.data import corpus


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  corpus.prepare_tfds(data_dir)
  return data_dir


@pytest.fixture(scope="session")
def tfds_array_record_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds_array_record")
  corpus.prepare_tfds(data_dir, file_format="array_record")
  return data_dir


@pytest.fixture(scope="session")
def jsonl_files(tmp_path_factory):
  return corpus.write_jsonl(tmp_path_factory.mktemp("jsonl"), files=3, per_file=50)


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory, jsonl_files):
  prefix = tmp_path_factory.mktemp("spm") / "spm"
  return train_vocab.train(jsonl_files, str(prefix), vocab_size=100)
