"""Overrides spelt on the command line read back as the same values, and applied as the command
line does: converted to the field's type, unknown keys named."""

import pytest

from cbs.config import defaults as config_defaults
from cbs.config import overrides as config_overrides


def test_flags_read_back_as_the_overrides_they_spell():
  overrides = {
    "batch.size": 64,
    "optimizer.lr": 0.001,
    "train.stop_loss": 0.0,
    "batch.ramp": [[1000, 32], [2000, 64]],
    "data.source": "text_files",
    "mesh.distributed": True,
  }
  flags = config_overrides.to_flags(overrides)
  assert flags[0] == "--config.batch.size=64"
  assert flags[3] == "--config.batch.ramp=[[1000, 32], [2000, 64]]"
  assert config_overrides.flag_keys(["--workdir=w", *flags]) == list(overrides)
  parsed = config_overrides.parse_flags(flags)
  assert parsed == {**overrides, "mesh.distributed": "True"}  # JSON spells true in lower case


def test_a_bare_argument_is_named():
  with pytest.raises(ValueError, match="unrecognized argument '--seeds=2'"):
    config_overrides.parse_flags(["--seeds=2"])


def test_values_take_the_type_of_the_field_they_replace():
  config = config_overrides.apply_as_command_line(
    config_defaults.get_config(),
    {"optimizer.lr": 1, "batch.size": 64.0, "mesh.distributed": "true", "batch.ramp": [[1000, 32]]},
  )
  assert isinstance(config.optimizer.lr, float) and config.optimizer.lr == 1.0
  assert isinstance(config.batch.size, int) and config.batch.size == 64
  assert config.mesh.distributed is True and config.batch.ramp == ((1000, 32),)


def test_an_unknown_key_is_refused_with_the_closest_one():
  with pytest.raises(ValueError, match="optimizer.learning_rate.*did you mean optimizer.lr"):
    config_overrides.apply_as_command_line(
      config_defaults.get_config(), {"optimizer.learning_rate": 1e-3}
    )


def test_changed_lists_what_differs_from_the_defaults():
  config = config_defaults.get_config()
  config.batch.size, config.batch.ramp = 96, ((1000, 192),)
  assert config_overrides.changed(config.to_dict()) == {
    "batch.size": 96,
    "batch.ramp": [[1000, 192]],
  }
