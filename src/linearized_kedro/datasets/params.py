"""``FlaxParamsDataset``: Flax variable trees as msgpack, never pickle (SPEC §4 item 16)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import serialization
from kedro.io.core import (
    DatasetError,
    get_filepath_str,
)
from kedro_datasets._typing import JSONPreview

from linearized_kedro.datasets.base import FsspecVersionedDataset
from linearized_kedro.datasets.metadata import atomic_write_bytes, read_sidecar, write_sidecar


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


class FlaxParamsDataset(FsspecVersionedDataset):
    """Loads and saves a Flax variables tree (``{'params':..., 'batch_stats':...}``).

    Stored with ``flax.serialization.msgpack_serialize``; loaded with
    ``msgpack_restore`` as a nested dict of NumPy arrays, ready for
    ``module.apply``. Writes are atomic (temporary file + rename) and a
    ``<file>.meta.json`` sidecar records provenance, leaf shapes, parameter count
    and SHA-256.

    Example catalog entry::

        "{dataset}.{model}.initial_variables":
          type: linearized_kedro.datasets.FlaxParamsDataset
          filepath: data/06_models/{dataset}/{model}/initial_variables.msgpack
          versioned: true
    """

    def load(self) -> dict[str, Any]:
        """Returns the stored tree as nested dicts of NumPy arrays."""
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            payload = handle.read()
        try:
            return serialization.msgpack_restore(payload)
        except Exception as exc:
            raise DatasetError(
                f"{load_path} is not a valid Flax msgpack file ({exc}); re-run the pipeline "
                "that produces it."
            ) from exc

    def save(self, data: Mapping[str, Any]) -> None:
        """Stores a nested mapping of arrays (JAX arrays are copied to host first)."""
        tree = to_numpy_tree(data)
        payload = serialization.msgpack_serialize(tree)
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        atomic_write_bytes(self._fs, save_path, payload)
        shapes = tree_shapes(tree)
        params = tree.get("params", tree)
        write_sidecar(
            self._fs,
            save_path,
            {
                "format": "flax-msgpack",
                "collections": sorted(tree),
                "num_params": int(sum(int(np.prod(s)) for s in tree_shapes(params).values())),
                "shapes": shapes,
                "sha256": hashlib.sha256(payload).hexdigest(),
                "version": self.resolve_save_version(),
            },
        )
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def load_metadata(self) -> dict[str, Any]:
        """The provenance stored beside the version that :meth:`load` would read."""
        return read_sidecar(get_filepath_str(self._get_load_path(), self._protocol), self._fs)

    def preview(self) -> JSONPreview:
        """Leaf shapes and the parameter count, for Kedro-Viz."""
        tree = self.load()
        shapes = tree_shapes(tree)
        info = {
            "num_leaves": len(shapes),
            "num_params": int(sum(int(np.prod(s)) for s in shapes.values())),
            "shapes": shapes,
        }
        return JSONPreview(json.dumps(info))

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
