"""Real text (text files, prepared shards, TFDS, seqio) as per-host grain streams and a held-out set.

Each document source gives this host's tokenized documents from a cursor; `packed_stream` packs
them, `example_shuffle` mixes the packed examples in blocks of `data.shuffle_buffer` and grain reads
ahead in a thread. Prepared shards are already tokenized and read by random
access. The held-out set comes from the validation split (prepared, TFDS, seqio) or from
`data.eval_files` (text files; by default the last training file, which is then not trained on).
"""

import itertools

import grain
import ml_collections

from cbs.data import example_shuffle
from cbs.data import packed_stream
from cbs.data import prepared
from cbs.data import seqio_source
from cbs.data import stream as stream_lib
from cbs.data import text_files
from cbs.data import tfds_source
from cbs.data import vocab as vocab_lib


def _file_split(data_cfg: ml_collections.ConfigDict):
  paths = text_files.resolve(data_cfg.files)
  if data_cfg.eval_files:
    held_out = text_files.resolve(data_cfg.eval_files)
    overlap = set(map(str, paths)) & set(map(str, held_out))
    if overlap:
      raise ValueError(f"data.eval_files overlaps data.files: {sorted(overlap)[0]}")
    return paths, held_out
  if len(paths) < 2:
    raise ValueError(
      f"data.files={data_cfg.files!r} is a single file; set data.eval_files, or give "
      "several files (the last one is then held out)"
    )
  return paths[:-1], paths[-1:]


def _tokenized(read, vocabulary):
  """A reader of (cursor, text) turned into a reader of (cursor, token ids)."""

  def read_tokens(cursor):
    cursors, texts = itertools.tee(read(cursor))  # holds at most one encoding chunk of items
    return zip(
      (c for c, _ in cursors), vocab_lib.encode_documents((t for _, t in texts), vocabulary)
    )

  return read_tokens


def _cursor_epoch(position: dict) -> int:
  """The epoch of a packed position whose reader's cursors start with the epoch (text files, TFDS)."""
  return position["cursor"][0] if position["cursor"] else 0


def _one_epoch(position: dict) -> int:
  """seqio's cursor counts documents across epochs: blocks of examples may span two."""
  del position
  return 0


def _prepared(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  d = config.data
  train = prepared.PreparedSplit(d.prepared_dir, d.train_split)
  held_out = prepared.PreparedSplit(d.prepared_dir, d.eval_split)
  count = min(stream_lib.eval_examples(config), held_out.num_examples(d.seq_len))
  examples = held_out.examples(d.seq_len)
  eval_batches = stream_lib.eval_batches(
    [examples[i] for i in range(count)], config.eval.batch_size, process_index, process_count
  )
  examples = prepared.host_examples(
    train, d.seq_len, config.seed, process_index, process_count, d.prefetch
  )
  stream = stream_lib.GrainStream(examples, process_index, process_count)
  return stream_lib.Data(stream, eval_batches, vocab_lib.padded_size(train), floors={})


def make(
  config: ml_collections.ConfigDict, process_index: int, process_count: int
) -> stream_lib.Data:
  d = config.data
  host = (process_index, process_count)
  epoch_of = _cursor_epoch
  if d.source == "prepared":
    return _prepared(config, *host)
  if d.source == "text_files":
    vocabulary = vocab_lib.make(d.vocab)
    train_paths, eval_paths = _file_split(d)
    train = text_files.TextFiles(train_paths, d.text_field, config.seed, *host)
    read_train = _tokenized(train.documents, vocabulary)
    held_out = text_files.TextFiles(eval_paths, d.text_field, seed=0, shuffle=False)
    eval_documents = _tokenized(lambda c: held_out.documents(c, epochs=1), vocabulary)(None)
  elif d.source == "tfds":
    vocabulary = vocab_lib.make(d.vocab)
    train = tfds_source.TfdsDocuments(
      d.tfds_name, d.tfds_data_dir, d.train_split, d.text_field, *host
    )
    read_train = _tokenized(train.documents, vocabulary)
    held_out = tfds_source.TfdsDocuments(d.tfds_name, d.tfds_data_dir, d.eval_split, d.text_field)
    eval_documents = _tokenized(lambda c: held_out.documents(c, epochs=1), vocabulary)(None)
  else:
    if d.seqio_task == seqio_source.C4_TASK:
      seqio_source.register_c4(d.vocab, d.tfds_name, d.tfds_data_dir, (d.train_split, d.eval_split))
    task = seqio_source.task(d.seqio_task, d.seqio_module)
    train = seqio_source.SeqioDocuments(task, d.train_split, *host)
    read_train = train.documents
    epoch_of = _one_epoch
    eval_documents = seqio_source.SeqioDocuments(task, d.eval_split).documents(epochs=1)
    vocabulary = train.vocabulary

  eval_batches = packed_stream.eval_batches(
    eval_documents,
    d.seq_len,
    vocabulary.eos_id,
    stream_lib.eval_examples(config),
    config.eval.batch_size,
    *host,
  )
  examples = packed_stream.PackedDataset(read_train, d.seq_len, vocabulary.eos_id)
  examples = example_shuffle.BlockShuffleDataset(examples, d.shuffle_buffer, config.seed, epoch_of)
  if d.prefetch > 0:
    examples = grain.experimental.ThreadPrefetchIterDataset(
      examples, prefetch_buffer_size=d.prefetch
    )
  stream = stream_lib.GrainStream(examples, *host)
  return stream_lib.Data(stream, eval_batches, vocab_lib.padded_size(vocabulary), floors={})
