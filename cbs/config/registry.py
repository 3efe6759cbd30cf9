"""Named choices of a config (optimizer, schedules, model, data source, ...): name -> entry -> checks.

Each choice is defined once, in the module that owns the concept, as a `Registry` of entries; an
entry holds what the name builds and `check`, the refusals that only apply when it is chosen
(`validation` runs the chosen entry's check before anything is created). `examples` are configs
each check refuses: the tests and the bad-input table of docs/configuration.md (`python -m cbs.bad_input_table`)
are generated from them, so both cover every check.
"""

import contextlib
import dataclasses
import difflib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Generic
from typing import TypeVar

import ml_collections

Check = Callable[[ml_collections.ConfigDict], None]
Overrides = Mapping[str, Any]  # dotted config key -> value, as on the command line


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and what is allowed."""


def require(ok: bool, message: str) -> None:
  """Raises ConfigError(message) unless `ok`."""
  if not ok:
    raise ConfigError(message)


@contextlib.contextmanager
def as_config_errors() -> Iterator[None]:
  """A ValueError raised inside (by code reading what a key names: files, a probe result) becomes
  the ConfigError of that key, so it is refused in one line like any other bad value."""
  try:
    yield
  except ValueError as e:
    raise ConfigError(str(e)) from None


def raising_config_errors(check: Callable[[ml_collections.ConfigDict], object]) -> Check:
  """`check` with its ValueErrors raised as ConfigErrors (`as_config_errors`)."""

  def checked(config: ml_collections.ConfigDict) -> None:
    with as_config_errors():
      check(config)

  return checked


def no_check(config: ml_collections.ConfigDict) -> None:
  del config


def lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of a dotted key (`optimizer.lr`)."""
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def closest(key: str, keys: Iterable[str]) -> str:
  """`; did you mean K?` for the existing key most like `key`, or "" if none is close.

  A name abbreviated to its words' initials (`learning_rate` -> `lr`) counts as the closest.
  """
  keys = list(keys)
  section, _, name = key.rpartition(".")
  initials = "".join(word[:1] for word in name.split("_"))
  abbreviated = [k for k in keys if k == (f"{section}.{initials}" if section else initials)]
  matches = abbreviated or difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
  return f"; did you mean {matches[0]}?" if matches else ""


T = TypeVar("T")
E = TypeVar("E")


@dataclasses.dataclass(frozen=True)
class Choice(Generic[T]):
  """An entry whose only content is what it builds (a function, a dtype, a policy)."""

  build: T
  check: Check = no_check
  examples: tuple[Overrides, ...] = ()


class Registry(Generic[E]):
  """The allowed values of one config key, each with its entry (a `Choice` or a richer dataclass).

  Entries must have `check` and `examples` attributes.
  """

  def __init__(
    self,
    key: str,
    entries: Mapping[str, E],
    unknown_example: str,
    name_of: Callable[[Any], str] | None = None,
  ):
    self.key = key
    self._entries = dict(entries)
    # A misspelt name, for the tests and the README table ("" where every value names an entry).
    self.unknown_example = unknown_example
    self._name_of = name_of  # the entry a config value names, where it is not the value itself

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __getitem__(self, name: str) -> E:
    """The entry of `name`; ConfigError listing the allowed names otherwise."""
    require(
      isinstance(name, str) and name in self._entries,
      f"{self.key}={name!r} is not one of: {', '.join(self._entries)}",
    )
    return self._entries[name]

  def items(self):
    return self._entries.items()

  def chosen(self, config: ml_collections.ConfigDict) -> E:
    value = lookup(config, self.key)
    return self[self._name_of(value) if self._name_of else value]

  def check(self, config: ml_collections.ConfigDict) -> None:
    """The chosen name is known and its own checks pass."""
    self.chosen(config).check(config)
