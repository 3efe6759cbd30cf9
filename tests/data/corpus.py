"""Small offline corpora for the data tests: generated documents, a local TFDS dataset, a vocabulary."""

import json
import pathlib
import random

import tensorflow_datasets as tfds

WORDS = (
  "the cat sat on a mat while dogs ran far away from big red houses near green trees and "
  "small birds sang loud songs every morning"
).split()


def document(index: int) -> str:
  rng = random.Random(index)
  return f"doc{index} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))


def write_jsonl(directory: pathlib.Path, files: int, per_file: int) -> list[str]:
  """`files` .jsonl files of `per_file` documents each; document ids run through all files."""
  paths = []
  for f in range(files):
    path = directory / f"part{f}.jsonl"
    with open(path, "w") as out:
      for i in range(per_file):
        out.write(json.dumps({"text": document(f * per_file + i), "id": i}) + "\n")
    paths.append(str(path))
  return paths


class TinyText(tfds.core.GeneratorBasedBuilder):
  """A text dataset built offline: 400 training and 60 validation documents."""

  VERSION = tfds.core.Version("1.0.0")
  NUM_TRAIN = 400

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
      "train": self._generate_examples(0, self.NUM_TRAIN),
      "validation": self._generate_examples(10_000, 60),
    }

  def _generate_examples(self, first: int, count: int):
    for i in range(first, first + count):
      yield i, {"text": document(i)}


class BenchText(TinyText):
  """The same documents, enough of them that a benchmark does not measure epoch restarts."""

  NUM_TRAIN = 50_000


def prepare_tfds(
  data_dir: pathlib.Path, builder: type = TinyText, file_format: str = "tfrecord"
) -> str:
  """Prepares the dataset into `data_dir` in that file format; returns its TFDS name."""
  prepared = builder(data_dir=str(data_dir), file_format=file_format)
  prepared.download_and_prepare()
  return f"{prepared.name}:1.0.0"
