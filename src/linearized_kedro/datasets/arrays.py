"""``NumpyDataset``: versioned ``.npy`` arrays with provenance, never pickled (SPEC §4 item 16)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from kedro.io.core import (
    DatasetError,
    get_filepath_str,
)
from kedro_datasets._typing import JSONPreview

from linearized_kedro.datasets.base import FsspecVersionedDataset
from linearized_kedro.datasets.metadata import (
    read_sidecar,
    remove_quietly,
    temporary_sibling,
    write_sidecar,
)

_PREVIEW_ITEMS = 10


class _HashingWriter:
    """File-like wrapper that hashes what passes through (np.save writes in chunks)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self._handle.write(data)


def check_array(data: Any, name: str = "array") -> np.ndarray:
    """Converts ``data`` to a NumPy array that ``.npy`` stores without pickle.

    Raises:
        DatasetError: For object, structured-with-objects or non-array data.
    """
    try:
        array = np.asarray(data)
    except Exception as exc:  # e.g. ragged lists
        raise DatasetError(f"Cannot save {name}: {type(data).__name__} is not an array.") from exc
    if array.dtype.hasobject:
        raise DatasetError(
            f"Cannot save {name} with dtype {array.dtype}: object arrays need pickle, which "
            "this project never uses (SPEC §4 item 16). Convert to a numeric dtype, or save "
            "a pytree with FlaxParamsDataset / a dict with a JSON dataset."
        )
    return array


class NumpyDataset(FsspecVersionedDataset):
    """Loads and saves one NumPy array as ``.npy`` on any fsspec filesystem.

    Saving writes a temporary file and renames it into place, so an interrupted or
    failed save never leaves a half-written file where a later run would load it,
    and never clobbers an earlier version. Beside each saved file a
    ``<file>.meta.json`` records the run's provenance plus the array's shape, dtype
    and SHA-256 (see :mod:`linearized_kedro.datasets.metadata`).

    Example catalog entry::

        prepared_inputs:
          type: linearized_kedro.datasets.NumpyDataset
          filepath: data/05_model_input/cifar10/prepared_inputs.npy
          versioned: true
    """

    def load(self) -> np.ndarray:
        """Returns the stored array (``allow_pickle=False``)."""
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        with self._fs.open(load_path, "rb") as handle:
            return np.load(handle, allow_pickle=False)

    def save(self, data: np.ndarray) -> None:
        """Stores ``data`` (any numeric/bool/str array; no object dtype) atomically."""
        array = check_array(data, name=str(self._filepath))
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        tmp = temporary_sibling(save_path)
        try:
            with self._fs.open(tmp, "wb") as handle:
                writer = _HashingWriter(handle)
                np.save(writer, array, allow_pickle=False)
            self._fs.mv(tmp, save_path)
        except BaseException:
            remove_quietly(self._fs, tmp)
            raise
        write_sidecar(
            self._fs,
            save_path,
            {
                "format": "npy",
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "sha256": writer.sha256.hexdigest(),
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
        """Shape, dtype and the first few values, for Kedro-Viz.

        Reads only the header and the first items (memory-mapped where local).
        """
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        if self._protocol == "file":
            array = np.load(load_path, mmap_mode="r", allow_pickle=False)
        else:
            array = self.load()
        head = np.asarray(array.reshape(-1)[:_PREVIEW_ITEMS])
        info: dict[str, Any] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "head": head.tolist(),
        }
        return JSONPreview(json.dumps(info))

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))
