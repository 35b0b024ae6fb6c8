"""Parameter handling shared by the training pipelines (no maths here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from linearized_kedro.core.config import dataclass_from_mapping

KIND_BY_FLAG = {"false": ("network",), "true": ("linear",), "both": ("network", "linear")}


def model_kinds(linearize: Any) -> tuple[str, ...]:
    """Maps the ``linearize`` parameter (false | true | both) to engine model kinds."""
    key = str(linearize).lower()
    if key not in KIND_BY_FLAG:
        raise ValueError(
            f"linearize must be false, true or both; got {linearize!r}. "
            "Use --params linearize=both to train the network and its linearisation."
        )
    return KIND_BY_FLAG[key]


def index_list(label_idx: Any, *, name: str = "label_idx") -> list[int]:
    """One integer or a list of integers → a sorted list of distinct non-negative ints."""
    values = (
        label_idx
        if isinstance(label_idx, Sequence) and not isinstance(label_idx, str)
        else [label_idx]
    )
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer or a list of integers; got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must be >= 0; got {value}.")
        out.append(int(value))
    if not out:
        raise ValueError(f"{name} is empty; give at least one index.")
    return sorted(set(out))


def override(value: Any, default: Any) -> Any:
    """A top-level ``--params`` shortcut (e.g. ``label_idx=10``) wins over the default."""
    return default if value is None else value


def as_params(cls: type, value: Any, section: str = "parameters") -> Any:
    """Kedro instantiates typed ``params:`` inputs; direct calls may pass a plain dict."""
    return dataclass_from_mapping(cls, value, section)
