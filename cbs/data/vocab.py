"""Vocabularies: bytes (offline default), a SentencePiece model, or a Hugging Face `tokenizer.json`.

SentencePiece and bytes come from seqio and follow its T5 convention (0 = padding, 1 = end of
sequence). A Hugging Face tokenizer keeps its own ids; its end-of-text token separates documents.
Padding is masked out of the loss by the batch weights, so the padding id never matters.
"""

from collections.abc import Iterator
from collections.abc import Sequence

import ml_collections
import numpy as np
from etils import epath

from cbs.config import registry

BYTE = "byte"
BYTE_VOCAB_SIZE = 259  # seqio's byte vocabulary: 256 bytes after 3 special ids
T5_VOCAB = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"  # the public T5 vocabulary
# End-of-document tokens of common Hugging Face tokenizers (GPT-2/NeoX, T5/Llama-2, Llama-3, ...).
HF_EOS_TOKENS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "[SEP]")


class HuggingFaceVocabulary:
  """A `tokenizers` model from a `tokenizer.json`, with the few methods the data layer uses."""

  def __init__(self, path: str):
    import tokenizers  # only for users of Hugging Face tokenizers  # noqa: PLC0415

    self.path = path
    try:
      self.tokenizer = tokenizers.Tokenizer.from_str(epath.Path(path).read_text())
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
      raise ValueError(
        f"data.vocab={path!r} is not a readable Hugging Face tokenizer.json "
        f"({str(e).splitlines()[0][:200]})"
      ) from None
    self.tokenizer.no_padding()
    self.tokenizer.no_truncation()
    found = [self.tokenizer.token_to_id(t) for t in HF_EOS_TOKENS]
    found = [i for i in found if i is not None]
    if not found:
      raise ValueError(
        f"data.vocab={path!r} has none of the end-of-text tokens "
        f"{', '.join(HF_EOS_TOKENS)}; add one to the tokenizer"
      )
    self.eos_id = found[0]
    self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(list(ids))


def kind(spec: str) -> str:
  """The vocabulary kind a `data.vocab` value names: byte, huggingface (.json) or sentencepiece."""
  if spec == BYTE:
    return BYTE
  return "huggingface" if spec.endswith(".json") else "sentencepiece"


def _byte(spec: str):
  del spec
  import seqio  # noqa: PLC0415

  from cbs import quiet_tensorflow  # noqa: F401, PLC0415  (before seqio, which imports it)

  return seqio.ByteVocabulary()


def _sentencepiece(spec: str):
  import seqio  # noqa: PLC0415

  from cbs import quiet_tensorflow  # noqa: F401, PLC0415

  vocabulary = seqio.SentencePieceVocabulary(spec)
  try:
    _ = vocabulary.vocab_size  # loads the model: a corrupt file fails here, not mid-run
  except Exception as e:
    raise ValueError(f"data.vocab={spec!r} is not a readable SentencePiece model ({e})") from None
  return vocabulary


def _check_file(config: ml_collections.ConfigDict) -> None:
  spec = config.data.vocab
  try:
    found = epath.Path(spec).is_file()
  except Exception as e:  # an unreachable bucket reports its own error type
    raise registry.ConfigError(
      f"data.vocab={spec!r} cannot be read ({type(e).__name__}: {e})"
    ) from None
  registry.require(
    found,
    f"data.vocab={spec!r} is neither 'byte' nor an existing SentencePiece "
    "model or Hugging Face tokenizer.json file",
  )


def _check_byte(config: ml_collections.ConfigDict) -> None:
  size, rows = config.model.vocab_size, padded_rows(BYTE_VOCAB_SIZE)
  registry.require(
    size == -1 or size >= rows,
    f"model.vocab_size={size} is smaller than the byte vocabulary ({rows} rows)",
  )


_TEXT = {"data.source": "text_files"}  # the data sources that read text check their vocabulary
VOCABULARIES = registry.Registry(
  "data.vocab",
  {
    BYTE: registry.Choice(_byte, _check_byte, ({**_TEXT, "model.vocab_size": 100},)),
    "sentencepiece": registry.Choice(
      _sentencepiece, _check_file, ({**_TEXT, "data.vocab": "/nonexistent/spm.model"},)
    ),
    "huggingface": registry.Choice(
      HuggingFaceVocabulary, _check_file, ({**_TEXT, "data.vocab": "/nonexistent/tokenizer.json"},)
    ),
  },
  unknown_example="",
  name_of=kind,
)


def make(spec: str):
  """`byte`, a SentencePiece model file or a `tokenizer.json`; raises ValueError if unreadable."""
  config = ml_collections.ConfigDict({"data": {"vocab": spec}, "model": {"vocab_size": -1}})
  VOCABULARIES.check(config)  # a ConfigError is a ValueError
  return VOCABULARIES[kind(spec)].build(spec)


def encode_batch(texts: Sequence[str], vocabulary) -> list[np.ndarray]:
  """Token ids of each text, without EOS (packing adds it), in one native call where possible."""
  if isinstance(vocabulary, HuggingFaceVocabulary):
    return [np.asarray(ids, np.int32) for ids in vocabulary.encode_batch(texts)]
  tokenizer = getattr(vocabulary, "tokenizer", None)  # SentencePiece: one C++ call for the batch
  if tokenizer is not None:
    return [np.asarray(ids, np.int32) for ids in tokenizer.encode(list(texts))]
  return [np.asarray(vocabulary.encode(text), np.int32) for text in texts]


def encode_documents(texts: Iterator[str], vocabulary, chunk: int = 256) -> Iterator[np.ndarray]:
  """Token ids of each text, encoded `chunk` texts per call."""
  batch = []
  for text in texts:
    batch.append(text)
    if len(batch) == chunk:
      yield from encode_batch(batch, vocabulary)
      batch = []
  if batch:
    yield from encode_batch(batch, vocabulary)


def padded_rows(vocab_size: int, multiple: int = 128) -> int:
  """Embedding rows for a vocabulary: rounded up so the `vocab` axis splits over model devices."""
  return -(-vocab_size // multiple) * multiple


def padded_size(vocabulary) -> int:
  """`padded_rows` of a vocabulary object."""
  return padded_rows(vocabulary.vocab_size)
