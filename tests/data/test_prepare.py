"""Prepared shards, Parquet files and Hugging Face tokenizers against independent tokenizations."""

import json
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import trainers

from cbs import data as data_lib
from cbs.data import prepare
from cbs.data import prepared
from cbs.data import text_files
from cbs.data import vocab as vocab_lib
from configs import tiny
from tests.data import corpus
from tests.helpers import last_line
from tests.helpers import run_module


def jsonl_texts(paths):
  return [json.loads(line)["text"] for path in paths for line in open(path)]


def joined(texts, encode, eos):
  return np.concatenate([np.append(np.asarray(encode(t), np.int32), eos) for t in texts])


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory, jsonl_files):
  """A byte-level BPE tokenizer.json trained here, offline, on the test corpus."""
  tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<pad>", "<|endoftext|>", "<unk>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tokenizer.train_from_iterator(jsonl_texts(jsonl_files), trainer)
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tokenizer.save(str(path))
  return str(path)


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory, jsonl_files):
  """The documents of the .jsonl files as .parquet files (one row group each), same order."""
  directory = tmp_path_factory.mktemp("parquet")
  paths = []
  for path in jsonl_files:
    out = directory / (pathlib.Path(path).stem + ".parquet")
    pq.write_table(pa.table({"text": jsonl_texts([path]), "id": range(50)}), out)
    paths.append(str(out))
  return paths


def test_hugging_face_tokenizer_encodes_as_the_library_itself(hf_tokenizer):
  vocabulary = vocab_lib.make(hf_tokenizer)
  reference = tokenizers.Tokenizer.from_file(hf_tokenizer)
  for i in range(20):
    text = corpus.document(i)
    assert vocabulary.encode(text) == reference.encode(text).ids
    assert vocabulary.decode(vocabulary.encode(text)) == text
  assert vocabulary.eos_id == reference.token_to_id("<|endoftext|>") == 1
  assert vocabulary.vocab_size == reference.get_vocab_size()


def test_tokenizer_json_without_an_end_of_text_token_is_refused(tmp_path):
  tokenizer = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
  tokenizer.save(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match="has none of the end-of-text tokens <|endoftext|>, </s>"):
    vocab_lib.make(str(tmp_path / "tokenizer.json"))


@pytest.mark.parametrize("vocab", ["spm", "hf"])
def test_shards_decode_back_to_the_tokenization_of_the_source_text(
  tmp_path, jsonl_files, spm_model, hf_tokenizer, vocab
):
  spec = spm_model if vocab == "spm" else hf_tokenizer
  manifest = prepare.prepare(
    jsonl_files,
    spec,
    str(tmp_path),
    record_tokens=100,
    shard_tokens=1000,
    workers=2 if vocab == "spm" else 1,
  )  # worker processes, and inline
  if vocab == "spm":
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
    encode, eos = processor.encode, 1
  else:
    reference = tokenizers.Tokenizer.from_file(hf_tokenizer)
    encode, eos = (lambda t: reference.encode(t).ids), 1
  for split, paths in (("train", jsonl_files[:-1]), ("validation", jsonl_files[-1:])):
    expected = joined(jsonl_texts(paths), encode, eos)
    stream = prepared.PreparedSplit(str(tmp_path), split)
    assert stream.tokens == len(expected) == manifest["splits"][split]["tokens"]
    np.testing.assert_array_equal(stream.window(0, len(expected)), expected)
    np.testing.assert_array_equal(stream.window(137, 250), expected[137:387])
    assert manifest["splits"][split]["documents"] == 50 * len(paths)
  assert len(manifest["splits"]["train"]["shards"]) > 1


def test_parquet_and_jsonl_of_the_same_documents_give_the_same_text(
  jsonl_files, parquet_files, spm_model
):
  """The same held-out batches, and the same documents in each training epoch (whose order
  depends on the pieces: .jsonl is read in finer pieces than a row group)."""
  epochs, held_out = {}, {}
  for kind, files in (("jsonl", jsonl_files), ("parquet", parquet_files)):
    config = tiny.get_config()
    config.data.update(dict(source="text_files", files=",".join(files), vocab=spm_model))
    config.eval.tokens, config.eval.batch_size = 512, 8
    data = data_lib.make(config, 0, 1)
    held_out[kind] = np.concatenate([b["inputs"] for b in data.eval_batches])
    data.train.close()
    reader = text_files.TextFiles(text_files.resolve(files)[:-1], "text", config.seed)
    epochs[kind] = [
      sorted(text for c, text in reader.documents(epochs=2) if c[0] == epoch) for epoch in range(2)
    ]
  np.testing.assert_array_equal(held_out["jsonl"], held_out["parquet"])
  assert epochs["jsonl"] == epochs["parquet"] == [sorted(jsonl_texts(jsonl_files[:-1]))] * 2


def test_parquet_without_the_text_column_is_named(tmp_path):
  path = tmp_path / "a.parquet"
  pq.write_table(pa.table({"body": ["x"]}), path)
  with pytest.raises(
    ValueError,
    match=r"a.parquet has no column 'text' \(data.text_field\); "
    "columns: body",
  ):
    text_files.pieces([path], "text")


def test_prepared_epochs_are_seeded_permutations_of_all_windows(tmp_path, jsonl_files):
  prepare.prepare(jsonl_files, "byte", str(tmp_path), record_tokens=64, workers=1)
  split = prepared.PreparedSplit(str(tmp_path), "train")
  seq_len = 64
  flat = split.window(0, split.tokens)
  count = split.num_examples(seq_len)
  windows = {flat[i * seq_len : i * seq_len + seq_len + 1].tobytes() for i in range(count)}
  iterator = iter(
    prepared.host_examples(split, seq_len, seed=5, process_index=0, process_count=1, prefetch=8)
  )
  epochs = [[next(iterator)[0].tobytes() for _ in range(count)] for _ in range(2)]
  iterator.close()
  assert set(epochs[0]) == set(epochs[1]) == windows and len(set(epochs[0])) == count
  assert epochs[0] != epochs[1]


def test_prepare_command_writes_the_manifest_and_names_bad_input(tmp_path, jsonl_files):
  args = [
    f"--files={','.join(jsonl_files)}",
    "--vocab=byte",
    f"--output={tmp_path / 'out'}",
    "--workers=1",
  ]
  done = run_module("cbs.data.prepare", args, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  manifest = prepared.read_manifest(str(tmp_path / "out"))
  assert manifest["splits"]["train"]["documents"] == 100 and "--vocab=byte" in manifest["command"]
  assert "train: " in done.stdout and "--config.data.source=prepared" in done.stdout
  bad = run_module("cbs.data.prepare", ["--files=/nonexistent/*.jsonl", *args[1:]], timeout=120)
  assert bad.returncode == 2
  assert last_line(bad.stderr) == (
    "cbs.data.prepare: data.files entry '/nonexistent/*.jsonl' matches no file"
  )
  assert "Traceback" not in bad.stderr
