"""Every named choice refuses what its checks declare; every key of configs/base.py is checked;
unknown keys name the closest one (on the command line: tests/test_validation.py; the bad-input
table generated from these examples is checked in tests/test_readme.py)."""

import ml_collections
import pytest

from cbs import bad_input_table
from cbs.config import keys as config_keys
from cbs.config import registry
from cbs.config import validation
from configs import base
from tests.helpers import ROOT

ENTRY_EXAMPLES = [
  (choice.key, name, example)
  for choice in validation.REGISTRIES
  for name, entry in choice.items()
  for example in entry.examples
]


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch):
  monkeypatch.chdir(ROOT)  # examples may name the repository's files, as the bad-input table does


@pytest.mark.parametrize(
  "key,name,example",
  ENTRY_EXAMPLES,
  ids=[f"{k}={n}-{i}" for i, (k, n, _) in enumerate(ENTRY_EXAMPLES)],
)
def test_each_entry_refuses_its_examples_by_its_own_check(key, name, example):
  choice = next(c for c in validation.REGISTRIES if c.key == key)
  config = bad_input_table.configured(example)
  with pytest.raises(registry.ConfigError) as by_entry:
    choice[name].check(config)
  with pytest.raises(registry.ConfigError) as by_validation:
    validation.validate(config, num_devices=1)
  assert str(by_validation.value) == str(by_entry.value)  # nothing before it refuses the example


def test_every_entry_with_checks_has_examples():
  unexampled = [
    f"{choice.key}={name}"
    for choice in validation.REGISTRIES
    for name, entry in choice.items()
    if entry.check is not registry.no_check and not entry.examples
  ]
  assert not unexampled


@pytest.mark.parametrize("choice", validation.REGISTRIES, ids=lambda c: c.key)
def test_an_unknown_name_lists_the_allowed_ones(choice):
  if not choice.unknown_example:  # data.vocab: any other value names a model file
    pytest.skip("every value names an entry")
  config = bad_input_table.configured({choice.key: choice.unknown_example})
  allowed = ", ".join(choice.names)
  with pytest.raises(registry.ConfigError) as refused:
    validation.validate(config, num_devices=1)
  assert str(refused.value) == f"{choice.key}={choice.unknown_example!r} is not one of: {allowed}"


BAD_VALUES = [(key, rule) for key, rule in config_keys.RULES.items() if rule.bad is not None]


@pytest.mark.parametrize("key,rule", BAD_VALUES, ids=[k for k, _ in BAD_VALUES])
def test_each_rule_refuses_its_bad_value_in_one_line(key, rule):
  config = bad_input_table.configured({key: rule.bad})
  with pytest.raises(registry.ConfigError) as refused:
    validation.validate(config, num_devices=1)
  assert str(refused.value) == f"{key}={registry.lookup(config, key)!r} {rule.allowed}"


def test_every_key_of_the_base_config_is_checked_by_exactly_one_place():
  keys = set(config_keys.flat(base.get_config()))
  by_rules = set(config_keys.RULES)
  by_registries = {choice.key for choice in validation.REGISTRIES}
  assert not by_rules & by_registries
  assert by_rules | by_registries == keys


def test_a_value_of_the_wrong_type_and_an_unknown_key_in_a_config_file_are_refused():
  plain = bad_input_table.configured({}).to_dict()
  plain["optimizer"]["clip"] = "1.0"  # a config built from a dict has no types to enforce
  with pytest.raises(registry.ConfigError, match=r"^optimizer.clip='1.0' must be a number$"):
    validation.validate(ml_collections.ConfigDict(plain), num_devices=1)
  config = bad_input_table.configured({})
  config.batch.schedul = "ramp"
  with pytest.raises(
    registry.ConfigError,
    match=r"^batch.schedul is not a config key; did you mean batch.schedule\?$",
  ):
    validation.validate(config, num_devices=1)
