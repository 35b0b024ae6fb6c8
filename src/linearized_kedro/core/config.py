"""Typed configuration blocks built from parameter mappings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_mapping(cls: type[T], value: Any, section: str) -> T:
    """An instance of the dataclass ``cls`` from a parameters mapping (or the instance itself).

    Kedro instantiates typed ``params:`` inputs itself; notebooks and tests pass plain
    mappings. Unknown keys are an error naming the valid ones, so a typo never silently
    falls back to a default.

    Args:
        cls: the dataclass.
        value: an instance of ``cls`` or a mapping of its fields.
        section: the parameters key, for error messages (e.g. ``"nads"``).
    """
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"'{section}' parameters must be a mapping; got {value!r}.")
    known = {f.name for f in fields(cls)}
    unknown = set(value) - known
    if unknown:
        raise ValueError(
            f"Unknown keys {sorted(unknown)} under '{section}'. Valid keys: {sorted(known)}."
        )
    return cls(**dict(value))
