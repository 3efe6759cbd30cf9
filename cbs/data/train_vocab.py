"""Trains a SentencePiece model on local text, for users who cannot read the public T5 vocabulary.

    python -m cbs.data.train_vocab --files='data/*.jsonl' --vocab_size=8000 --output=/tmp/spm

writes `/tmp/spm.model` (use it as `--config.data.vocab=/tmp/spm.model`) and `/tmp/spm.vocab`.
Ids follow the T5 convention (0 pad, 1 eos, 2 unk), as `cbs.data.vocab` expects.
"""

import sentencepiece as spm
from absl import app
from absl import flags

from cbs.data import text_files

_FILES = flags.DEFINE_list("files", None, "Text files: globs or paths (.txt, .jsonl).")
_OUTPUT = flags.DEFINE_string(
  "output", None, "Output prefix; writes PREFIX.model and PREFIX.vocab."
)
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 32_000, "Number of pieces, special ids included.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "Field holding the text in .jsonl files.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece model.")
_MAX_DOCS = flags.DEFINE_integer("max_documents", 1_000_000, "Documents sampled for training.")


def train(
  files: list[str],
  output: str,
  vocab_size: int,
  text_field: str = "text",
  model_type: str = "unigram",
  max_documents: int = 1_000_000,
) -> str:
  """Trains on the first `max_documents` documents of `files`; returns the model's path."""
  paths = text_files.resolve(files)
  documents = text_files.read_documents(paths, text_field)

  def sentences():
    for count, document in enumerate(documents):
      if count >= max_documents:
        return
      yield document

  spm.SentencePieceTrainer.train(
    sentence_iterator=sentences(),
    model_prefix=output,
    vocab_size=vocab_size,
    model_type=model_type,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    character_coverage=0.9995,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  return f"{output}.model"


def main(argv: list[str]) -> None:
  del argv
  print(
    train(
      _FILES.value,
      _OUTPUT.value,
      _VOCAB_SIZE.value,
      _TEXT_FIELD.value,
      _MODEL_TYPE.value,
      _MAX_DOCS.value,
    )
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["files", "output"])
  app.run(main)
