"""``ResultsCollectionDataset``: the latest version of every known result, or ``None``.

Kedro has no optional inputs: a node whose input was never saved fails. The
``reporting`` pipeline must summarise whatever experiments have run, so it reads one
dataset that looks each artifact up itself, in Kedro's versioned layout
``<filepath>/<version>/<basename>`` (latest = lexicographically greatest version folder
that holds the file, which is the newest for Kedro's timestamp versions), and returns
``None`` for artifacts that do not exist yet.
"""

from __future__ import annotations

import io
import json
import logging
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets._typing import TablePreview

logger = logging.getLogger(__name__)

# File extension → format; `format:` in an artifact's config overrides it.
_FORMATS = {".json": "json", ".npy": "npy", ".csv": "csv", ".png": "bytes", ".md": "text"}


def _loader(fmt: str):
    def load_json(handle):
        return json.load(handle)

    def load_npy(handle):
        return np.load(io.BytesIO(handle.read()), allow_pickle=False)

    def load_csv(handle):
        return pd.read_csv(handle)

    def load_bytes(handle):
        return handle.read()

    def load_text(handle):
        return handle.read().decode("utf-8")

    loaders = {
        "json": load_json,
        "npy": load_npy,
        "csv": load_csv,
        "bytes": load_bytes,
        "text": load_text,
    }
    if fmt not in loaders:
        raise DatasetError(f"Unknown artifact format {fmt!r}; valid formats: {sorted(loaders)}.")
    return loaders[fmt]


class ResultsCollectionDataset(AbstractDataset[None, dict[str, Any]]):
    """Read-only collection of the latest stored version of several artifacts.

    Example catalog entry::

        experiment_results:
          type: linearized_kedro.datasets.results_collection.ResultsCollectionDataset
          artifacts:
            ntk_report: data/07_model_output/ntk_spectrum/digits/mlp/report.json
            cifar2_results:
              filepath: data/07_model_output/cifar2/digits/mlp/results.csv
              format: csv
          versions:            # optional pins, like --load-versions
            ntk_report: 2026-11-28T10.00.00.000Z

    ``load()`` returns ``{name: data or None}``: JSON → dict, ``.npy`` → array (never
    unpickled), ``.csv`` → DataFrame, ``.png`` → bytes, ``.md`` → str. A path that is a
    plain file (an unversioned artifact) is read directly.
    """

    def __init__(
        self,
        *,
        artifacts: dict[str, str | dict[str, str]],
        versions: dict[str, str] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates the collection.

        Args:
            artifacts: name → filepath, or name → ``{filepath, format}``.
            versions: optional name → version pins.
            credentials: Passed to the fsspec filesystem.
            fs_args: Passed to the fsspec filesystem constructor.
            metadata: Free-form (e.g. ``kedro-viz: {layer: ...}``); ignored by Kedro.

        Raises:
            DatasetError: For an empty collection, a bad entry or an unknown format.
        """
        if not artifacts:
            raise DatasetError("ResultsCollectionDataset needs at least one artifact.")
        self._artifacts: dict[str, dict[str, str]] = {}
        protocols = set()
        for name, spec in artifacts.items():
            spec = {"filepath": spec} if isinstance(spec, str) else dict(spec)
            if "filepath" not in spec:
                raise DatasetError(f"Artifact {name!r} needs a 'filepath'; got {spec!r}.")
            protocol, path = get_protocol_and_path(str(spec["filepath"]))
            suffix = PurePosixPath(path).suffix.lower()
            fmt = spec.get("format") or _FORMATS.get(suffix)
            if fmt is None:
                raise DatasetError(
                    f"Cannot infer the format of artifact {name!r} from {path!r}; add "
                    f"'format:' (one of {sorted(set(_FORMATS.values()))})."
                )
            _loader(fmt)  # unknown format → error at construction, not at load
            self._artifacts[name] = {"path": path, "format": fmt}
            protocols.add(protocol)
        if len(protocols) > 1:
            raise DatasetError(f"All artifacts must use one filesystem; got {sorted(protocols)}.")
        unknown = set(versions or {}) - set(self._artifacts)
        if unknown:
            raise DatasetError(f"Version pins for unknown artifacts: {sorted(unknown)}.")
        self._versions = dict(versions or {})
        self._protocol = protocols.pop()
        self._fs = fsspec.filesystem(
            self._protocol, **(deepcopy(credentials) or {}), **(deepcopy(fs_args) or {})
        )
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "artifacts": {name: spec["path"] for name, spec in self._artifacts.items()},
            "protocol": self._protocol,
            "versions": self._versions,
        }

    def _full(self, path: str) -> str:
        return path if self._protocol == "file" else f"{self._protocol}://{path}"

    def resolve(self, name: str) -> tuple[str | None, str | None]:
        """(file to read, version) of one artifact; ``(None, None)`` when it does not exist.

        Args:
            name: an artifact name from the ``artifacts`` config.
        """
        if name not in self._artifacts:
            raise DatasetError(f"Unknown artifact {name!r}; known: {sorted(self._artifacts)}.")
        path = self._artifacts[name]["path"]
        basename = PurePosixPath(path).name
        self._fs.invalidate_cache(path)
        if not self._fs.exists(path):
            return None, None
        if self._fs.isfile(path):
            return path, None
        pinned = self._versions.get(name)
        if pinned is not None:
            candidate = f"{path}/{pinned}/{basename}"
            if not self._fs.exists(candidate):
                raise DatasetError(
                    f"Pinned version {pinned!r} of {name!r} does not exist at {candidate}."
                )
            return candidate, pinned
        folders = sorted(
            (PurePosixPath(p).name for p in self._fs.ls(path, detail=False)), reverse=True
        )
        for version in folders:
            candidate = f"{path}/{version}/{basename}"
            if self._fs.exists(candidate):  # skips folders of failed/partial saves
                return candidate, version
        return None, None

    def versions(self) -> dict[str, str | None]:
        """name → the version ``load()`` would read (``None``: missing or unversioned)."""
        return {name: self.resolve(name)[1] for name in self._artifacts}

    def load(self) -> dict[str, Any]:
        """Loads the latest version of every artifact.

        Returns:
            name → data, or ``None`` for an artifact that has not been produced.

        Raises:
            DatasetError: When an existing file cannot be read (it is never silently
                reported as missing).
        """
        out: dict[str, Any] = {}
        for name, spec in self._artifacts.items():
            path, version = self.resolve(name)
            if path is None:
                logger.info("Result %s not found under %s.", name, spec["path"])
                out[name] = None
                continue
            try:
                with self._fs.open(path, "rb") as handle:
                    out[name] = _loader(spec["format"])(handle)
            except Exception as exc:
                raise DatasetError(
                    f"Cannot read {name!r} from {self._full(path)}: {exc}. Delete that "
                    "version folder or rerun the pipeline that produces it."
                ) from exc
            logger.info("Result %s: version %s", name, version or "(unversioned)")
        return out

    def save(self, data: None) -> None:
        raise DatasetError("ResultsCollectionDataset is read-only: each pipeline saves its own.")

    def _exists(self) -> bool:
        return True  # an empty collection is a valid (all-missing) result

    def preview(self) -> TablePreview:
        """For Kedro-Viz: one row per artifact with its status and latest version."""
        rows = []
        for name, spec in self._artifacts.items():
            path, version = self.resolve(name)
            rows.append([name, "found" if path else "missing", version or "", spec["path"]])
        return TablePreview(
            {
                "index": list(range(len(rows))),
                "columns": ["artifact", "status", "version", "filepath"],
                "data": rows,
            }
        )
