"""``ArtifactDataset``: the versioned, atomic, verified file dataset every artifact class builds on.

What it adds to Kedro's ``AbstractVersionedDataset`` (constructor compatible with
kedro-datasets: ``filepath, load_args, save_args, version, credentials, fs_args,
metadata``):

- **Atomic saves** (:mod:`.atomic`): temporary sibling, fsync, then a no-clobber
  publish; the sidecar (:mod:`.metadata`) is written first, so every visible artifact
  has one.
- **Integrity on load** (:mod:`.integrity`): size and SHA-256 checked against the
  sidecar, once per file state and process.
- **Latest = latest complete**: an unpinned load resolves to the newest version that
  its run *committed* (or the version this run saved itself). Versions of killed or
  failed runs are skipped, never mixed in. ``--load-versions`` pins still win; a
  pinned version that does not exist is an error listing the versions that do.
- **Deduplication** (``deduplicate: true``, for prepared data and θ0): a versioned
  save whose bytes equal a stored version's is a hard link to it (local
  filesystems): a new version for provenance, no second copy.
- **Run binding**: ``hooks.RunsHook`` gives the dataset its run's unique save
  version and pins its load version for the run (:meth:`bind_run`);
  ``hooks.ProvenanceHook`` hands it the provenance of its save
  (:meth:`set_provenance`). A dataset saved outside a run commits each save itself.
"""

from __future__ import annotations

import logging
import os
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any, ClassVar

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    VersionNotFoundError,
    get_filepath_str,
    get_protocol_and_path,
)

from linearized_kedro.datasets import atomic
from linearized_kedro.datasets.integrity import IntegrityError, verify_file
from linearized_kedro.datasets.metadata import (
    commit_path,
    is_committed,
    read_sidecar,
    remove_quietly,
    sidecar_path,
    write_commit,
    write_sidecar,
)

logger = logging.getLogger(__name__)

# How many stored versions a save compares its bytes with (newest first).
_DEDUP_CANDIDATES = 16


class ArtifactDataset(AbstractVersionedDataset):
    """Base class of the project's file datasets (one file per version).

    Subclasses set ``FORMAT`` (and optionally ``DEFAULT_LOAD_ARGS`` /
    ``DEFAULT_SAVE_ARGS``) and implement:

    - ``_write(out, data) -> dict``: write ``data``'s bytes to ``out`` (a binary
      writer); return facts for the sidecar (shape, dtype, ...). Raise
      ``DatasetError`` for data that cannot be stored, before writing anything.
    - ``_read(payload: bytes) -> data``.
    """

    FORMAT: ClassVar[str] = "bytes"
    DEFAULT_LOAD_ARGS: ClassVar[dict[str, Any]] = {}
    DEFAULT_SAVE_ARGS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Kedro records each dataset's constructor arguments by wrapping ``__init__`` with a
        # (*args, **kwargs) shim; a subclass that inherits ours would then be recorded as
        # args/kwargs (``kedro catalog resolve-patterns`` printed them so). Give it the real
        # signature to wrap instead.
        if "__init__" not in cls.__dict__:
            cls.__init__ = getattr(
                ArtifactDataset.__init__, "__wrapped__", ArtifactDataset.__init__
            )
        super().__init_subclass__(**kwargs)

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        deduplicate: bool = False,
    ) -> None:
        """Creates a dataset for the file at ``filepath``.

        Args:
            filepath: Path or fsspec URL (``s3://...``) of the file.
            load_args: Options of the reader (see the subclass).
            save_args: Options of the writer (see the subclass).
            version: Kedro version (``versioned: true`` in the catalog).
            credentials: Passed to the fsspec filesystem.
            fs_args: Passed to the fsspec filesystem constructor.
            metadata: Free-form (e.g. ``kedro-viz: {layer: ...}``); ignored by Kedro.
            deduplicate: Store a version whose bytes equal a stored version's as a
                hard link to it (local filesystems only). Meant for large inputs that
                repeat across runs (prepared data, θ0): linked versions share their
                bytes, so damage to one is damage to all of them.
        """
        _fs_args = deepcopy(fs_args) or {}
        _credentials = deepcopy(credentials) or {}
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **_credentials, **_fs_args)
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self._deduplicate = bool(deduplicate)
        self._run_id: str | None = None
        self._provenance: dict[str, Any] | None = None
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    # -- subclass interface -------------------------------------------------------

    def _write(self, out: atomic.HashingWriter, data: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _read(self, payload: bytes) -> Any:
        raise NotImplementedError

    # -- run binding ---------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The run this dataset is bound to (its save version), if any."""
        return self._run_id

    def bind_run(self, run_id: str | None, *, load_version: str | None = None) -> None:
        """Binds the dataset to a run: saves go to version ``run_id``; loads use ``load_version``.

        Args:
            run_id: The run's save version (unique per run, see ``hooks.RunsHook``).
            load_version: Version to load for the whole run (resolved once, so every
                node of the run reads the same upstream run); ``None`` keeps the
                catalog's pin or the latest-complete lookup.
        """
        self._run_id = run_id
        if self._version is not None:
            self._version = Version(load_version or self._version.load, run_id)
        self._clear_version_cache()

    def set_provenance(self, provenance: dict[str, Any] | None) -> None:
        """The provenance record written into the sidecars of this dataset's saves.

        Set by ``hooks.ProvenanceHook`` in the main process before the run; it travels
        with the dataset to the process that saves it (``ParallelRunner`` workers too).
        """
        self._provenance = dict(provenance) if provenance else None

    @property
    def pinned_version(self) -> str | None:
        """The load version fixed by ``--load-versions`` or :meth:`bind_run`."""
        return self._version.load if self._version else None

    # -- versions ------------------------------------------------------------------

    def version_path(self, version: str) -> str:
        """The file's path inside version folder ``version``."""
        return get_filepath_str(self._get_versioned_path(version), self._protocol)

    def version_status(self) -> list[tuple[str, str]]:
        """Every stored version, newest first, with ``"complete"`` or ``"incomplete"``."""
        if self._version is None:
            return []
        try:
            paths = self._get_versions()
        except VersionNotFoundError:
            return []
        return [
            (
                PurePosixPath(path).parent.name,
                "complete" if is_committed(self._fs, path) else "incomplete",
            )
            for path in paths
        ]

    def committed_versions(self) -> list[str]:
        """Versions whose run committed them, newest first."""
        return [v for v, status in self.version_status() if status == "complete"]

    def describe_versions(self, limit: int = 8) -> str:
        """A one-line list of the stored versions and their state, for error messages."""
        status = self.version_status()
        if not status:
            return "no version is stored"
        shown = ", ".join(f"{v} ({s})" for v, s in status[:limit])
        more = f" and {len(status) - limit} older" if len(status) > limit else ""
        return f"stored versions, newest first: {shown}{more}"

    def _fetch_latest_load_version(self) -> str:
        """The newest version a complete run committed, or the one this run saved."""
        if self._cached_load_version is not None:
            return self._cached_load_version
        # What this run saved itself comes first, even if a concurrent run committed a
        # newer version meanwhile.
        if self._run_id is not None and self._fs.exists(self.version_path(self._run_id)):
            self._cached_load_version = self._run_id
            return self._run_id
        paths = self._get_versions()
        skipped = []
        for path in paths:
            version = PurePosixPath(path).parent.name
            if is_committed(self._fs, path):
                if skipped:
                    logger.info(
                        "%s: skipping %d incomplete version(s) (killed, failed or still "
                        "running): %s; loading %s.",
                        self._filepath.name,
                        len(skipped),
                        ", ".join(skipped[:3]),
                        version,
                    )
                self._cached_load_version = version
                return version
            skipped.append(version)
        if skipped:
            raise VersionNotFoundError(
                f"No complete version of {self._filepath}: the {len(skipped)} stored "
                f"version(s) ({', '.join(skipped[:5])}) belong to runs that were killed, "
                "failed or are still running. Rerun the pipeline that produces it, or pin "
                "one explicitly with --load-versions."
            )
        raise VersionNotFoundError(f"Did not find any versions for {self}")

    def saved_in_run(self, run_id: str) -> bool:
        """Whether version ``run_id`` of this artifact is stored (file and sidecar)."""
        if self._version is None:
            return False
        path = self.version_path(run_id)
        return bool(self._fs.exists(path) and self._fs.exists(sidecar_path(path)))

    def commit(self, run_id: str, record: dict[str, Any]) -> bool:
        """Marks version ``run_id`` complete; returns whether it was stored.

        Args:
            run_id: The version to commit.
            record: What is recorded in the marker (run, pipeline, siblings).
        """
        if not self.saved_in_run(run_id):
            return False
        path = self.version_path(run_id)
        if not self._fs.exists(commit_path(path)):
            write_commit(self._fs, path, record)
        return True

    # -- load / save ---------------------------------------------------------------

    def _load_path(self) -> str:
        pinned = self.pinned_version
        path = get_filepath_str(self._get_load_path(), self._protocol)
        if pinned and not self._fs.exists(path):
            raise VersionNotFoundError(
                f"Version {pinned!r} of {self._filepath}: no such version; "
                f"{self.describe_versions()}."
            )
        if pinned and self._version is not None and pinned != self._run_id:
            if not is_committed(self._fs, path):
                logger.warning(
                    "Loading pinned version %s of %s, whose run did not complete.",
                    pinned,
                    self._filepath.name,
                )
        return path

    # Implemented as `_load`/`_save`: Kedro wraps `save` of every subclass again unless
    # it comes from `_save`, and a twice-wrapped versioned save picks two save versions.
    def _load(self) -> Any:
        """Reads the artifact after checking its size and SHA-256 against the sidecar."""
        path = self._load_path()
        self._verify(path)
        with self._fs.open(path, "rb") as handle:
            return self._read_from(handle)

    def _read_from(self, handle) -> Any:
        """Reads the data from an open binary file (default: all bytes to ``_read``)."""
        return self._read(handle.read())

    def _verify(self, path: str) -> None:
        try:
            artifact = read_sidecar(path, self._fs).get("artifact", {})
        except FileNotFoundError:
            logger.debug("%s has no sidecar; its integrity cannot be checked.", path)
            return
        try:
            verify_file(self._fs, path, artifact)
        except IntegrityError as exc:
            shared = self._versions_sharing_bytes(path)
            if not shared:
                raise
            raise IntegrityError(
                f"{exc} The damaged bytes are shared (deduplicated) with version(s) "
                f"{', '.join(shared)} of this artifact: delete those version folders too."
            ) from exc

    def _versions_sharing_bytes(self, path: str) -> list[str]:
        """Other versions hard-linked to the file at ``path`` (local filesystems)."""
        if not atomic.is_local(self._fs):
            return []
        st = os.stat(path)
        if st.st_nlink < 2:
            return []
        shared = []
        for other in self._get_versions():
            if other != path and os.path.exists(other):
                o = os.stat(other)
                if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
                    shared.append(PurePosixPath(other).parent.name)
        return shared

    def _save(self, data: Any) -> None:
        """Stores ``data`` atomically with its sidecar (see the module docstring)."""
        versioned = self._version is not None
        path = get_filepath_str(self._get_save_path(), self._protocol)
        facts: dict[str, Any] = {}

        def write(out) -> None:
            facts.update(self._write(out, data))

        if versioned and self._deduplicate and atomic.is_local(self._fs):
            # Digest first: bytes equal to a stored version's are linked, never written
            # (the prepared CIFAR-10 inputs of N = 8 000: 98 MB and an fsync per run).
            sha256, size = atomic.digest_of(write)
            same_as = self._identical_version(sha256, size)
            if same_as:
                self._link(path, same_as, sha256, size, facts)
                return
            facts.clear()
        staged = atomic.stage(self._fs, path, write)
        try:
            artifact = self._artifact(staged.sha256, staged.size, facts)
            write_sidecar(self._fs, path, artifact, self._save_provenance())
            atomic.publish(staged, replace=not versioned)
        except BaseException:
            atomic.discard(staged)
            if versioned and not self._fs.exists(path):
                remove_quietly(self._fs, sidecar_path(path))
            raise
        self._saved(path, versioned)

    def _link(self, path: str, same_as: str, sha256: str, size: int, facts: dict) -> None:
        """Publishes the version at ``path`` as a hard link to the identical ``same_as``."""
        artifact = self._artifact(sha256, size, facts)
        artifact["same_content_as"] = PurePosixPath(same_as).parent.name
        try:
            write_sidecar(self._fs, path, artifact, self._save_provenance())
            atomic.link_version(same_as, path)
        except BaseException:
            if not self._fs.exists(path):
                remove_quietly(self._fs, sidecar_path(path))
            raise
        self._saved(path, versioned=True)

    def _artifact(self, sha256: str, size: int, facts: dict) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "size": size,
            "sha256": sha256,
            "version": self.resolve_save_version(),
            **facts,
        }

    def _save_provenance(self) -> dict[str, Any]:
        return {**(self._provenance or {}), "run_id": self._run_id}

    def _saved(self, path: str, versioned: bool) -> None:
        if versioned and self._run_id is None:
            # Saved outside a Kedro run: this save is a unit of its own.
            write_commit(self._fs, path, {"run_id": None, "standalone": True})
        self._invalidate_cache()

    def _identical_version(self, sha256: str, size: int) -> str | None:
        """A stored version with the same bytes, verified, to hard-link to (or ``None``)."""
        try:
            candidates = self._get_versions()[:_DEDUP_CANDIDATES]
        except VersionNotFoundError:
            return None
        for path in candidates:
            try:
                artifact = read_sidecar(path, self._fs).get("artifact", {})
                if artifact.get("sha256") != sha256 or artifact.get("size") != size:
                    continue
                verify_file(self._fs, path, artifact)
            except (FileNotFoundError, DatasetError, OSError, ValueError):
                continue
            return path
        return None

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return bool(self._fs.exists(load_path))

    def load_metadata(self) -> dict[str, Any]:
        """The sidecar of the version that :meth:`load` would read."""
        return read_sidecar(self._load_path(), self._fs)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "load_args": self._load_args,
            "save_args": self._save_args,
            "version": self._version,
        }

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))

    def _local_load_path(self) -> str | None:
        """The load path where the filesystem is local (for memory-mapped previews)."""
        return self._load_path() if atomic.is_local(self._fs) else None


# The first wave's name for the base class.
FsspecVersionedDataset = ArtifactDataset

__all__ = ["ArtifactDataset", "FsspecVersionedDataset"]
