"""C4 as in the critical-batch-size paper: `--config=configs/c4.py:SOURCE,SIZE`.

SOURCE is `tfds` (reads `c4/en:3.1.0` from `data.tfds_data_dir`) or `seqio` (the `cbs_c4` task over
the same TFDS data); SIZE is `tiny` or one of the paper's model shapes (85m, 151m, 302m, 604m, 1.2b)
at context 512. The vocabulary defaults to the public T5 SentencePiece model (32k pieces); without
bucket access, train one with `python -m cbs.data.train_vocab` and pass `--config.data.vocab=PATH`.
C4 must be prepared once (TFDS builds it with Apache Beam); point `--config.data.tfds_data_dir` at
the directory or bucket holding it. The paper's training protocol
(optimizer settings, warmup and budgets) lives in the paper configs.
"""

import ml_collections

from cbs.data import vocab
from cbs.models import PAPER_SIZES
from configs import base
from configs import tiny


def get_config(spec: str = "tfds,tiny") -> ml_collections.ConfigDict:
  source, _, size = spec.partition(",")
  if source not in ("tfds", "seqio"):
    raise ValueError(f"configs/c4.py:{spec}: source {source!r} is not one of tfds, seqio")
  if size not in ("tiny", "", *PAPER_SIZES):
    raise ValueError(
      f"configs/c4.py:{spec}: size {size!r} is not one of tiny, {', '.join(PAPER_SIZES)}"
    )
  if size in ("tiny", ""):
    c = tiny.get_config()
    c.data.seq_len = 128
  else:
    c = base.get_config()
    c.model.update(PAPER_SIZES[size])
    c.model.scan_layers = True  # 12-24 blocks compiled once (1.2b on 8 devices: 40 s -> 6 s)
    c.data.seq_len = 512
  c.data.source = source
  c.data.vocab = vocab.T5_VOCAB
  c.data.tfds_name = "c4/en:3.1.0"
  c.data.tfds_data_dir = ""  # TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.seqio_task = "cbs_c4"
  return c
