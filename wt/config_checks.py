"""The checks every config section uses: one definition of each rule and of its message.

A config section is a frozen dataclass that subclasses `Section` (`ModelConfig` in
wt/models.py, `DataConfig` in wt/data/config.py, `TrainConfig` in wt/train_config.py,
`DecodeConfig` in wt/decode_config.py, `DistributedConfig` in wt/parallel.py; the experiments
add `CompareConfig`): its fields and defaults are the section's, and its `__post_init__` runs
`check_types` and the rules below. Every failure is the section's `ConfigError` with one line:

    config.<section>.<field>=<value> <what is wrong; what to use instead>

`check_types` holds every field to its annotation: an `int` field refuses `True` and `2.0`, a
`float` field refuses NaN and infinity, a `bool` field refuses 1. `Section.from_mapping` builds
a section from a dict or ConfigDict and refuses unknown fields, each with the closest valid
name (`unknown_fields_message`, which the experiments' command-line check shares).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import typing
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence

import ml_collections


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the field and the fix."""


class Section:
  """Base of a config section's frozen dataclass: `class TrainConfig(Section, section="train")`.

  `error` is the ConfigError subclass its checks raise (wt.data's is also a DataError).
  """

  SECTION: ClassVar[str]
  ERROR: ClassVar[type[ConfigError]]

  def __init_subclass__(cls, *, section: str, error: type[ConfigError] = ConfigError, **kwargs):
    super().__init_subclass__(**kwargs)
    cls.SECTION, cls.ERROR = section, error

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]):
    """The section of a dict or ConfigDict; unknown fields are refused by name."""
    values = dict(values)
    valid = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
      raise cls.ERROR(unknown_fields_message(cls.SECTION, unknown, valid, where=cls))
    return cls(**values)


def unknown_fields_message(
  section: str, unknown: Sequence[str], valid: Iterable[str], *, where: Any
) -> str:
  """`unknown train config field(s) [...]`, each with the closest valid name, and where the
  valid fields are defined (`where`: a Section class, or a sentence)."""
  valid = list(valid)
  prefix = f"config.{section}." if section else "config."
  named = []
  for name in unknown:
    close = difflib.get_close_matches(name, valid, n=1)
    named.append(
      f"{prefix}{name} is not a field" + (f" (did you mean {prefix}{close[0]}?)" if close else "")
    )
  if isinstance(where, type):
    where = f"{where.__name__} in {where.__module__.replace('.', '/')}.py"
  label = f"{section} config" if section else "config"
  return (
    f"unknown {label} field(s) {list(unknown)}: {'; '.join(named)}; see {where} for "
    f"every field and its default"
  )


def default_values(section_class: type[Section]) -> dict[str, Any]:
  """The defaults of a section for a ConfigDict: a None default becomes a placeholder of the
  field's type, so that `--config.<section>.<field>=...` can still set it."""
  types = _field_types(section_class)  # type: ignore[arg-type]
  return {
    field.name: (
      field.default
      if field.default is not None
      else ml_collections.config_dict.placeholder(_without_none(types[field.name]))
    )
    for field in dataclasses.fields(section_class)  # type: ignore[arg-type]
  }


def fail(config: Section, field: str, problem: str) -> ConfigError:
  """The error `config.<section>.<field>=<value> <problem>` (to raise)."""
  return type(config).ERROR(f"config.{config.SECTION}.{field}={getattr(config, field)!r} {problem}")


# ------------------------------------------------------------------------------------------
# Types: every field against its annotation.


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


_KINDS = {
  bool: ("true or false", lambda v: isinstance(v, bool)),
  int: ("an integer", _is_integer),
  float: ("a finite number", _is_finite_number),
  str: ("a string", lambda v: isinstance(v, str)),
}


@functools.cache
def _field_types(section_class: type) -> dict[str, Any]:
  hints = typing.get_type_hints(section_class)
  return {field.name: hints[field.name] for field in dataclasses.fields(section_class)}


def _without_none(hint):
  """X of Optional[X]; X itself otherwise."""
  if typing.get_origin(hint) is typing.Union:
    (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return inner
  return hint


def _type_problem(value, hint) -> Optional[str]:
  """Why `value` does not fit `hint` (bool, int, float, str, Optional[...], tuple[X, ...])."""
  if typing.get_origin(hint) is typing.Union:
    return None if value is None else _type_problem(value, _without_none(hint))
  if typing.get_origin(hint) is tuple:
    item_kind, is_item = _KINDS[typing.get_args(hint)[0]]
    if not isinstance(value, (tuple, list)) or not value or not all(map(is_item, value)):
      return f"must be a non-empty tuple, each item {item_kind}"
    return None
  if hint not in _KINDS:
    return None  # a type without a rule here: the section's own checks cover it
  kind, is_kind = _KINDS[hint]
  return None if is_kind(value) else f"must be {kind}"


def check_types(config: Section) -> None:
  """Every field holds a value of its annotated type (see the module docstring)."""
  for field, hint in _field_types(type(config)).items():  # type: ignore[arg-type]
    problem = _type_problem(getattr(config, field), hint)
    if problem:
      raise fail(config, field, problem)


# ------------------------------------------------------------------------------------------
# Values.


def positive_int(config: Section, *fields: str) -> None:
  for field in fields:
    value = getattr(config, field)
    if not _is_integer(value) or value <= 0:
      raise fail(config, field, "must be a positive integer")


def at_least(config: Section, field: str, minimum: float, reason: str = "") -> None:
  """A finite number >= minimum; `reason` (e.g. "(a token and EOS)") follows the rule."""
  value = getattr(config, field)
  if not _is_finite_number(value) or value < minimum:
    raise fail(config, field, f"must be at least {minimum:g}{' ' + reason if reason else ''}")


def positive(config: Section, *fields: str) -> None:
  for field in fields:
    value = getattr(config, field)
    if not _is_finite_number(value) or value <= 0:
      raise fail(config, field, "must be a finite number > 0")


def in_range(config: Section, low: float, high: float, *fields: str) -> None:
  """Finite numbers in [low, high)."""
  for field in fields:
    value = getattr(config, field)
    if not _is_finite_number(value) or not low <= value < high:
      raise fail(config, field, f"must be in [{low:g}, {high:g})")


def one_of(config: Section, field: str, choices: Sequence) -> None:
  if getattr(config, field) not in choices:
    raise fail(config, field, f"is not a valid choice; use one of {choices!r}")


def each_one_of(config: Section, field: str, choices: Sequence) -> None:
  """Every item of a tuple field is one of `choices`."""
  wrong = [item for item in getattr(config, field) if item not in choices]
  if wrong:
    raise fail(config, field, f"holds {wrong[0]!r}, not a valid choice; use items of {choices!r}")
