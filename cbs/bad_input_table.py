"""The bad-input table of docs/configuration.md, generated from the checks themselves: `python -m cbs.bad_input_table`.

Every example a check declares - `config_keys.RULES`' refused values, each registry's misspelt name
and its entries' examples, `validation`'s cross-key and device checks - is applied to
`configs/tiny.py` and validated as `python -m cbs.main` does on one device; a row is the override
and the exact line printed. Run from the repository root (some examples name its files).
"""

import pathlib

import ml_collections

from cbs.config import keys as config_keys
from cbs.config import overrides as config_overrides
from cbs.config import registry
from cbs.config import validation

# Read as a config file, as `cbs.main --config=...` does: the package imports no config file.
TINY_CONFIG = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "tiny.py")
UNKNOWN_KEY_EXAMPLE = "optimizer.learning_rate"
HEADER = ("| overrides | message |", "|---|---|")


def examples() -> list[registry.Overrides]:
  """Every declared example, in the order validation checks them."""
  found: list[registry.Overrides] = [{UNKNOWN_KEY_EXAMPLE: 1e-3}]
  found += [{key: rule.bad} for key, rule in config_keys.RULES.items() if rule.bad is not None]
  for choice in validation.REGISTRIES:
    if choice.unknown_example:
      found.append({choice.key: choice.unknown_example})
    found += [example for _, entry in choice.items() for example in entry.examples]
  found += [example for cross in validation.CROSS_CHECKS for example in cross.examples]
  return found + list(validation.DEVICE_EXAMPLES)


def configured(overrides: registry.Overrides) -> ml_collections.ConfigDict:
  """configs/tiny.py with the overrides applied (ints in float fields become floats, as on the
  command line)."""
  return config_overrides.apply(config_overrides.load(TINY_CONFIG, {}), overrides)


def message(overrides: registry.Overrides) -> str:
  """The line `cbs.main` prints for configs/tiny.py with these overrides; ValueError if accepted."""
  unknown = [key for key in overrides if key not in validation.KNOWN_KEYS]
  if unknown:  # refused while the command line is parsed
    return f"cbs: bad config: {validation.unknown_key(unknown[0])}"
  try:
    validation.validate(configured(overrides), num_devices=1)
  except registry.ConfigError as e:
    return f"cbs: bad config: {e}"
  raise ValueError(f"{overrides} is accepted, but it is declared as an example of a refusal")


def rows() -> list[str]:
  """The table, one markdown line per example."""
  lines = list(HEADER)
  for overrides in examples():
    flags = " ".join(config_overrides.to_flags(overrides))
    lines.append(f"| `{flags}` | `{message(overrides)}` |")
  return lines


def main() -> None:
  print("\n".join(rows()))


if __name__ == "__main__":
  main()
