"""The fsspec plumbing shared by the project's versioned file datasets."""

from __future__ import annotations

from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractVersionedDataset, Version, get_protocol_and_path


class FsspecVersionedDataset(AbstractVersionedDataset):
    """A versioned dataset of one file on any fsspec filesystem (local paths create folders).

    Subclasses implement ``load`` and ``save`` through ``self._fs``, ``self._protocol``,
    ``self._get_load_path()`` and ``self._get_save_path()``.
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a dataset for the file at ``filepath``.

        Args:
            filepath: Path or fsspec URL (``s3://...``) of the file.
            version: Kedro version (``versioned: true`` in the catalog).
            credentials: Passed to the fsspec filesystem.
            fs_args: Passed to the fsspec filesystem constructor.
            metadata: Free-form (e.g. ``kedro-viz: {layer: ...}``); ignored by Kedro.
        """
        _fs_args = deepcopy(fs_args) or {}
        _credentials = deepcopy(credentials) or {}
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **_credentials, **_fs_args)
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}
