"""``NumpyDataset``: versioned ``.npy`` arrays with provenance, never pickled (docs/methods.md §4 item 16)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from kedro.io.core import DatasetError
from kedro_datasets._typing import JSONPreview

from linearized_kedro.datasets.base import ArtifactDataset

_PREVIEW_ITEMS = 10


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
            "this project never uses (docs/methods.md §4 item 16). Convert to a numeric dtype, or save "
            "a pytree with FlaxParamsDataset / a dict with a JSON dataset."
        )
    return array


class NumpyDataset(ArtifactDataset):
    """Loads and saves one NumPy array as ``.npy`` on any fsspec filesystem.

    Saves are atomic and never replace a stored version; loads check the SHA-256
    recorded in the ``<file>.meta.json`` sidecar, which also holds the run's
    provenance and the array's shape and dtype (see
    :class:`~linearized_kedro.datasets.base.ArtifactDataset`).

    In ``conf/base/catalog.yml``: the prepared data (``"prepared_{name}"``), the
    spectrum (``"ntk_{name}"``) and the NADs (``"nads_{name}"``).
    """

    FORMAT = "npy"

    def _write(self, out, data: Any) -> dict[str, Any]:
        array = check_array(data, name=str(self._filepath))
        np.save(out, array, allow_pickle=False)
        return {"shape": list(array.shape), "dtype": str(array.dtype)}

    def _read_from(self, handle) -> np.ndarray:
        return np.load(handle, allow_pickle=False)

    def preview(self) -> JSONPreview:
        """Shape, dtype and the first few values, for Kedro-Viz.

        Reads only the header and the first items (memory-mapped where local).
        """
        local = self._local_load_path()
        if local is not None:
            array = np.load(local, mmap_mode="r", allow_pickle=False)
        else:
            array = self.load()
        head = np.asarray(array.reshape(-1)[:_PREVIEW_ITEMS])
        info: dict[str, Any] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "head": head.tolist(),
        }
        return JSONPreview(json.dumps(info))
