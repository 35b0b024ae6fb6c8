"""``FlaxParamsDataset``: Flax variable trees as msgpack, never pickle (docs/methods.md §4 item 16)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import serialization
from kedro.io.core import DatasetError
from kedro_datasets._typing import JSONPreview

from linearized_kedro.datasets.base import ArtifactDataset


def to_numpy_tree(tree: Any, path: str = "") -> dict[str, Any]:
    """Copies a nested mapping of arrays (JAX or NumPy; FrozenDicts too) to plain dicts of NumPy arrays.

    Args:
        tree: ``{'params': {...}, 'batch_stats': {...}}`` or any nested mapping with
            string keys and array (or number) leaves.
        path: Prefix used in error messages.

    Raises:
        DatasetError: For non-string keys, or leaves that are not numeric arrays.
    """
    if not isinstance(tree, Mapping):
        raise DatasetError(
            f"Cannot save {path or 'the value'}: expected a nested dict of arrays "
            f"(e.g. Flax variables), got {type(tree).__name__}."
        )
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise DatasetError(
                f"Cannot save key {key!r} at {path or '<root>'}: msgpack trees need string keys."
            )
        where = f"{path}/{key}" if path else key
        if isinstance(value, Mapping):
            out[key] = to_numpy_tree(value, where)
            continue
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise DatasetError(f"Cannot save leaf {where!r}: not an array ({exc}).") from exc
        if array.dtype.hasobject or array.dtype.kind not in "biufc":
            raise DatasetError(
                f"Cannot save leaf {where!r} of type {type(value).__name__} (dtype "
                f"{array.dtype}): only numeric arrays are stored, never pickled objects."
            )
        out[key] = array
    return out


def tree_shapes(tree: Mapping[str, Any], path: str = "") -> dict[str, list[int]]:
    """Flat ``{"params/Dense_0/kernel": shape}`` view of a NumPy tree."""
    shapes: dict[str, list[int]] = {}
    for key, value in tree.items():
        where = f"{path}/{key}" if path else key
        if isinstance(value, Mapping):
            shapes.update(tree_shapes(value, where))
        else:
            shapes[where] = list(np.shape(value))
    return shapes


def _count(shapes: Mapping[str, list[int]]) -> int:
    """The number of scalars in leaves of these shapes."""
    return int(sum(int(np.prod(shape)) for shape in shapes.values()))


class FlaxParamsDataset(ArtifactDataset):
    """Loads and saves a Flax variables tree (``{'params':..., 'batch_stats':...}``).

    Stored with ``flax.serialization.msgpack_serialize``; loaded with
    ``msgpack_restore`` as a nested dict of NumPy arrays, ready for
    ``module.apply``. Saves are atomic, loads verified; the sidecar records
    provenance, leaf shapes, the parameter count and the SHA-256 (see
    :class:`~linearized_kedro.datasets.base.ArtifactDataset`). θ0 identical to a
    stored version is stored as a hard link to it.

    In ``conf/base/catalog.yml``: θ0 (``"{name}_init_params"``) and the trained models
    (``"{name}_trained_params"``).
    """

    FORMAT = "flax-msgpack"

    def _write(self, out, data: Mapping[str, Any]) -> dict[str, Any]:
        tree = to_numpy_tree(data)
        out.write(serialization.msgpack_serialize(tree))
        params = tree.get("params", tree)
        return {
            "collections": sorted(tree),
            "num_params": _count(tree_shapes(params)),
            "shapes": tree_shapes(tree),
        }

    def _read(self, payload: bytes) -> dict[str, Any]:
        try:
            return serialization.msgpack_restore(payload)
        except Exception as exc:
            raise DatasetError(
                f"{self._filepath} is not a valid Flax msgpack file ({exc}); re-run the "
                "pipeline that produces it."
            ) from exc

    def preview(self) -> JSONPreview:
        """Leaf shapes and the parameter count, for Kedro-Viz."""
        tree = self.load()
        shapes = tree_shapes(tree)
        info = {"num_leaves": len(shapes), "num_params": _count(shapes), "shapes": shapes}
        return JSONPreview(json.dumps(info))
