"""Configuration resolvers used by ``conf/`` (registered in ``settings.py``)."""

from __future__ import annotations

from typing import Any


def model_preset(name: str, *, _root_: Any) -> Any:
    """``${model_preset:${model}}``: the preset ``models.<name>``, or an error listing them.

    Kedro merges ``--params`` before resolving, so ``--params model=mlp`` selects the MLP
    preset and ``--params models.lenet.activation=gelu`` edits one field of it.
    """
    presets = _root_.get("models") or {}
    if name not in presets:
        raise ValueError(
            f"Unknown model {name!r}. Valid models: {', '.join(presets)} "
            "(--params model=<name>; presets are under `models:` in conf/base/parameters.yml)."
        )
    return presets[name]
