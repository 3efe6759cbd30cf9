"""Vocabularies: seqio's byte vocabulary (offline default) or any SentencePiece model, local or gs://.

Ids follow the T5 convention that seqio uses: 0 = padding, 1 = end of sequence, so packed data and
the loss mask mean the same thing whichever vocabulary is chosen.
"""

from collections.abc import Iterator

import numpy as np
import seqio
from etils import epath

BYTE = "byte"
T5_VOCAB = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"  # the public T5 vocabulary


def make(spec: str) -> seqio.Vocabulary:
  """`byte`, or the path of a SentencePiece model; raises ValueError if it cannot be read."""
  if spec == BYTE:
    return seqio.ByteVocabulary()
  try:
    found = epath.Path(spec).is_file()
  except Exception as e:  # an unreachable bucket reports its own error type
    raise ValueError(f"data.vocab={spec!r} cannot be read ({type(e).__name__}: {e})") from None
  if not found:
    raise ValueError(f"data.vocab={spec!r} is neither 'byte' nor an existing SentencePiece model file")
  vocabulary = seqio.SentencePieceVocabulary(spec)
  try:
    vocabulary.vocab_size  # loads the model: a corrupt file fails here, not mid-run
  except Exception as e:
    raise ValueError(f"data.vocab={spec!r} is not a readable SentencePiece model ({e})") from None
  return vocabulary


def encode_documents(texts: Iterator[str], vocabulary: seqio.Vocabulary,
                     chunk: int = 256) -> Iterator[np.ndarray]:
  """Token ids of each text, without EOS (packing adds it).

  SentencePiece encodes `chunk` texts per call (one C++ call instead of one Python call per text).
  """
  tokenizer = getattr(vocabulary, "tokenizer", None)
  if tokenizer is None:
    for text in texts:
      yield np.asarray(vocabulary.encode(text), np.int32)
    return
  batch = []
  for text in texts:
    batch.append(text)
    if len(batch) == chunk:
      yield from (np.asarray(ids, np.int32) for ids in tokenizer.encode(batch))
      batch = []
  yield from (np.asarray(ids, np.int32) for ids in tokenizer.encode(batch))


def padded_size(vocabulary: seqio.Vocabulary, multiple: int = 128) -> int:
  """Embedding rows for this vocabulary: rounded up so the `vocab` axis splits over model devices."""
  return -(-vocabulary.vocab_size // multiple) * multiple
