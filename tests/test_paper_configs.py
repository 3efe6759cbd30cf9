"""The paper configs carry the CBS paper's protocol and Chinchilla budgets."""

import pytest

from cbs import models
from cbs import validation
from configs import cbs_paper


@pytest.mark.parametrize("spec,multiple", [("tiny", 1.0), ("85m", 1.0), ("302m,x0.5", 0.5),
                                           ("1.2b,x4", 4.0)])
def test_budgets_and_protocol(spec, multiple):
  c = cbs_paper.get_config(spec)
  chinchilla = 20 * models.param_counts(c.model, 32_000)["non_embedding"]
  assert c.train_tokens == int(multiple * chinchilla)
  assert c.schedule.warmup_tokens == min(chinchilla // 4, c.train_tokens)
  assert (c.optimizer.name, c.optimizer.b1, c.optimizer.eps, c.optimizer.weight_decay,
          c.optimizer.clip) == ("adamw", 0.95, 1e-8, 0.0, 1.0)
  assert (c.schedule.name, c.schedule.warmup_init) == ("constant", 0.1)
  assert len(c.ewa.decays) >= 2
  if spec != "tiny":
    assert (c.data.seq_len, c.data.source, c.batch.size) == (512, "tfds", 256)
    assert c.model.d_model == models.PAPER_SIZES[spec.split(",")[0]]["d_model"]


def test_tiny_paper_config_is_valid_on_cpu():
  validation.validate(cbs_paper.get_config("tiny,x2"), num_devices=1)


def test_bad_spec_is_named():
  with pytest.raises(ValueError, match="configs/cbs_paper.py:2b: use SIZE or SIZE,xK"):
    cbs_paper.get_config("2b")
