"""Typed configuration blocks: one base class, one conversion helper.

Every block of parameters (``ntk:``, ``eigen_training:``, its ``train:`` block, a model
preset, ...) is a frozen dataclass deriving from :class:`Config`. Constructing one checks
every field against its annotation and converts nested mappings into the nested config
types, so the same object comes out whether Kedro instantiates it from ``parameters.yml``
before the run (Kedro calls ``cls(**mapping)`` for dataclass-typed ``params:`` inputs),
a notebook calls ``SpectrumConfig(num_eigvecs=50)`` or a test passes a mapping to
:func:`from_mapping`. Errors name the full key (``ntk.num_eigvecs``) and what was expected.

Supported annotations: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]``, ``dict`` / ``Mapping``, ``Any`` and nested :class:`Config` subclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

import numpy as np

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter block that does not match its declared types or ranges."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every typed parameter block.

    Subclasses are ``@dataclass(frozen=True)``, set ``SECTION`` to their parameters key
    (used in error messages) and may override :meth:`validate` for range and
    cross-field checks (raise :class:`ConfigError` naming the key).
    """

    SECTION: ClassVar[str] = "parameters"

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            key = f"{self.SECTION}.{f.name}"
            value = _check(getattr(self, f.name), hints.get(f.name, Any), key)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Range and cross-field checks; the default accepts everything."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly mapping (tuples become lists), e.g. for reports."""
        return _plain(dataclasses.asdict(self))

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)


def from_mapping(cls: type[T], value: Any, section: str | None = None) -> T:
    """An instance of the config class ``cls`` from a mapping (or the instance itself).

    Unknown keys are an error naming the valid ones, so a typo never silently falls back
    to a default.

    Args:
        cls: a :class:`Config` subclass (any dataclass works).
        value: an instance of ``cls``, a mapping of its fields, or ``None`` (defaults).
        section: the parameters key for error messages; defaults to ``cls.SECTION``.
    """
    section = section or getattr(cls, "SECTION", cls.__name__)
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{section}' must be a mapping of parameters; got {value!r}.")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}. "
            f"Valid keys under '{section}': {', '.join(sorted(known))}."
        )
    try:
        return cls(**dict(value))
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid '{section}' parameters: {exc}") from exc


# Kept for callers of the first wave's name.
def dataclass_from_mapping(cls: type[T], value: Any, section: str) -> T:
    """Alias of :func:`from_mapping` with an explicit section name."""
    return from_mapping(cls, value, section)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: check nothing
        return {}


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _check(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against ``annotation`` (converted where lossless), else ConfigError."""
    if annotation is Any or annotation is typing.Any:
        return value
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{key} must be {names}; got {value!r}.")
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(
                f"{key} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}."
            )
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        return from_mapping(annotation, value, key)
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise ConfigError(f"{key} must be a list; got {value!r}.")
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        item = args[0] if args else Any
        return tuple(_check(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping; got {value!r}.")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise ConfigError(f"{key} must be true or false; got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{key} must be an integer; got {value!r}.")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ConfigError(f"{key} must be a number; got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}.")
        return value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
