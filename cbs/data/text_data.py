"""Real text (local files, TFDS, seqio) as packed, exact-once streams and a fixed held-out set.

Each source gives this host's tokenized documents from a start index; `packed_stream` turns them
into examples. The held-out set comes from the validation split (TFDS, seqio) or from `data.eval_files`
(text files; by default the last training file, which is then not trained on).
"""

import ml_collections

from cbs.data import packed_stream
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
    raise ValueError(f"data.files={data_cfg.files!r} is a single file; set data.eval_files, or give "
                     "several files (the last one is then held out)")
  return paths[:-1], paths[-1:]


def make(config: ml_collections.ConfigDict, process_index: int, process_count: int) -> stream_lib.Data:
  d = config.data
  host = (process_index, process_count)
  if d.source == "text_files":
    vocabulary = vocab_lib.make(d.vocab)
    train_paths, eval_paths = _file_split(d)
    train = text_files.TextFiles(train_paths, d.text_field, config.seed, *host)
    train_documents = lambda start: vocab_lib.encode_documents(train.documents(start), vocabulary)
    eval_texts = text_files.TextFiles(eval_paths, d.text_field, seed=0).documents(epochs=1)
    eval_documents = vocab_lib.encode_documents(eval_texts, vocabulary)
  elif d.source == "tfds":
    vocabulary = vocab_lib.make(d.vocab)
    train = tfds_source.TfdsDocuments(d.tfds_name, d.tfds_data_dir, d.train_split, d.text_field,
                                      *host)
    train_documents = lambda start: vocab_lib.encode_documents(train.documents(start), vocabulary)
    held_out = tfds_source.TfdsDocuments(d.tfds_name, d.tfds_data_dir, d.eval_split, d.text_field)
    eval_documents = vocab_lib.encode_documents(held_out.documents(epochs=1), vocabulary)
  else:
    if d.seqio_task == seqio_source.C4_TASK:
      seqio_source.register_c4(d.vocab, d.tfds_name, d.tfds_data_dir, (d.train_split, d.eval_split))
    task = seqio_source.task(d.seqio_task, d.seqio_module)
    train = seqio_source.SeqioDocuments(task, d.train_split, *host)
    train_documents = train.documents
    eval_documents = seqio_source.SeqioDocuments(task, d.eval_split).documents(epochs=1)
    vocabulary = train.vocabulary

  seq_len, eval_batch = d.seq_len, config.eval.batch_size
  num_eval = -(-max(config.eval.tokens, 1) // (seq_len * eval_batch)) * eval_batch
  eval_batches = packed_stream.eval_batches(eval_documents, seq_len, vocabulary.eos_id, num_eval,
                                            eval_batch, *host)
  stream = packed_stream.PackedStream(train_documents, seq_len, vocabulary.eos_id, *host,
                                      prefetch=d.prefetch)
  return stream_lib.Data(stream, eval_batches, vocab_lib.padded_size(vocabulary), floors={})
