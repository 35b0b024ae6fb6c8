"""Persisted Gram tiles, so that an interrupted NTK computation resumes where it stopped.

The dataset's ``load()`` returns a :class:`GramBlockStore`. A computation is identified
by a fingerprint (a hash of the inputs, θ0 and the tiling); its tiles live in
``<path>/<fingerprint>/tile_<i>_<j>.npy``. Each tile is written to a temporary file and
renamed into place, so a killed run never leaves a half-written tile that a later run
would load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)

_TILE = re.compile(r"^tile_(\d+)_(\d+)\.npy$")


class GramBlockStore:
    """Tiles of one Gram computation, keyed by ``(i, j)`` block indices (i <= j)."""

    def __init__(self, root: Path, fingerprint: str, description: dict[str, Any] | None = None):
        if not re.fullmatch(r"[0-9a-zA-Z_-]+", fingerprint):
            raise ValueError(f"Invalid Gram fingerprint {fingerprint!r}.")
        self.directory = Path(root) / fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        info = self.directory / "computation.json"
        if description is not None and not info.exists():
            info.write_text(json.dumps(description, indent=2, sort_keys=True, default=str))

    def keys(self) -> list[tuple[int, int]]:
        """Block indices of the tiles already stored."""
        out = []
        for name in os.listdir(self.directory):
            match = _TILE.match(name)
            if match:
                out.append((int(match.group(1)), int(match.group(2))))
        return sorted(out)

    def load_all(self) -> dict[tuple[int, int], np.ndarray]:
        """All stored tiles; a tile that cannot be read is dropped (and recomputed)."""
        tiles = {}
        for key in self.keys():
            path = self._path(key)
            try:
                tiles[key] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                logger.warning("Ignoring unreadable Gram tile %s (%s); recomputing it.", path, err)
        return tiles

    def put(self, key: tuple[int, int], tile: np.ndarray) -> None:
        """Stores one finished tile atomically."""
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as stream:
                np.save(stream, np.asarray(tile), allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def clear(self) -> None:
        """Deletes the tiles once the computation has finished and its results are saved."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _path(self, key: tuple[int, int]) -> Path:
        i, j = (int(v) for v in key)
        return self.directory / f"tile_{i}_{j}.npy"


class GramBlockStoreDataset(AbstractDataset[None, "GramBlockStoreFactory"]):
    """Catalog entry for resumable Gram tiles (local paths only).

    ``load()`` returns a factory: ``factory(fingerprint, description) -> GramBlockStore``.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._root = Path(path)
        self.metadata = metadata

    def load(self) -> GramBlockStoreFactory:
        return GramBlockStoreFactory(self._root)

    def save(self, data: None) -> None:
        raise DatasetError("Gram tiles are written by the ntk_spectrum node, not saved.")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root)}

    def _exists(self) -> bool:
        return True


class GramBlockStoreFactory:
    """Opens the tile store of one computation under a root folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __call__(self, fingerprint: str, description: dict[str, Any] | None = None):
        return GramBlockStore(self.root, fingerprint, description)
