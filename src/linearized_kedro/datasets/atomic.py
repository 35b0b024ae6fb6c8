"""Atomic file writes: a reader sees the previous state or the complete new file, never a part.

Every byte the project's datasets store goes through :class:`HashingWriter` into a
temporary sibling of the target (same directory, so the final rename cannot cross
filesystems), is flushed and ``fsync``-ed, and only then *published* under its real
name: by a hard link that fails if the name exists (versioned artifacts are never
replaced) or by ``os.replace`` (unversioned files, replaced as a whole). The
directory is ``fsync``-ed after publishing, so a power loss cannot undo a rename
that a later step relied on.

A full disk (``ENOSPC``/``EDQUOT``) is reported as :class:`StorageFullError`, which
names what ran out and where, and how to free space; the temporary file is removed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
from kedro.io.core import DatasetError

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20
_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class StorageFullError(DatasetError):
    """The filesystem holding an artifact ran out of space (or quota) during a write."""


class ArtifactExistsError(DatasetError):
    """A versioned artifact was about to be written over an existing one."""


@dataclass(frozen=True)
class StagedFile:
    """A fully written temporary file waiting to be published under ``target``."""

    fs: Any
    local: bool
    tmp: str
    target: str
    sha256: str
    size: int


class DigestSink:
    """Hashes and counts the bytes written to it, and stores nothing.

    A deduplicated save serialises into it first: when a stored version has the same
    SHA-256 and size, the new version is a hard link to it and no byte is written.
    """

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def _hashed(self, data) -> memoryview:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        return view

    def write(self, data) -> int:
        view = self._hashed(data)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass


class HashingWriter(DigestSink):
    """A binary file wrapper that hashes and counts what passes through.

    The single seam through which every stored byte flows (``np.save`` and friends
    call ``write`` in chunks), which is also where the fault-injection tests
    intervene. ``size`` counts the bytes the file accepted.
    """

    def __init__(self, handle: BinaryIO, path: str) -> None:
        super().__init__()
        self._handle = handle
        self.path = path

    def write(self, data) -> int:
        view = self._hashed(data)
        written = self._handle.write(view)
        self.size += len(view)
        return written if written is not None else len(view)

    def flush(self) -> None:
        self._handle.flush()


def digest_of(write: Callable[[DigestSink], None]) -> tuple[str, int]:
    """(SHA-256 hex digest, size) of the bytes ``write`` produces, without storing them."""
    sink = DigestSink()
    write(sink)
    return sink.digest.hexdigest(), sink.size


def file_mode() -> int:
    """Permission bits of stored files: what ``open()`` would give, plus group-read.

    Results are shared by a research group; ``tempfile``'s private ``0600`` (what the
    tiles were written with) locks the group out.
    """
    return (0o666 & ~current_umask()) | 0o640


def dir_mode() -> int:
    """Permission bits of folders the project creates: ``mkdir`` default plus group r-x."""
    return (0o777 & ~current_umask()) | 0o750


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local filesystem (atomic links, fsync, permissions)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def temporary_sibling(path: str) -> str:
    """A fresh hidden name beside ``path`` for a file being written (same filesystem)."""
    parent, _, name = str(path).rpartition("/")
    tmp_name = f".{name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}"
    return f"{parent}/{tmp_name}" if parent else tmp_name


def make_dirs(path: str) -> None:
    """Creates ``path`` and its missing parents, group-readable (whatever the umask)."""
    if os.path.isdir(path):
        return
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    mode = dir_mode()
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:  # created meanwhile by a concurrent run
            continue
        os.chmod(folder, mode)  # mkdir's mode is filtered by the umask


def stage(
    fs: fsspec.AbstractFileSystem, target: str, write: Callable[[HashingWriter], None]
) -> StagedFile:
    """Writes a temporary sibling of ``target`` through ``write`` and syncs it to disk.

    Args:
        fs: Filesystem of ``target``.
        target: Final path of the file.
        write: Called with a :class:`HashingWriter` to produce the file's bytes.

    Returns:
        The staged file (publish it with :func:`publish` or drop it with :func:`discard`).

    Raises:
        StorageFullError: When the filesystem is full; nothing is left behind.
    """
    local = is_local(fs)
    tmp = temporary_sibling(target)
    writer = None
    try:
        if local:
            make_dirs(os.path.dirname(target) or ".")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb", buffering=_CHUNK) as handle:
                os.fchmod(handle.fileno(), file_mode())
                writer = HashingWriter(handle, target)
                write(writer)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with fs.open(tmp, "wb") as handle:
                writer = HashingWriter(handle, target)
                write(writer)
    except BaseException as exc:
        _remove_quietly(fs, tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL_DISK_ERRNOS:
            raise storage_full(target, exc, written=writer.size if writer else 0) from exc
        raise
    return StagedFile(fs, local, tmp, target, writer.digest.hexdigest(), writer.size)


def publish(staged: StagedFile, *, replace: bool = False) -> None:
    """Gives a staged file its final name, atomically.

    Args:
        staged: From :func:`stage`.
        replace: Replace an existing file (unversioned data). Otherwise an existing
            target is an error and is left untouched.

    Raises:
        ArtifactExistsError: ``replace=False`` and the target exists.
    """
    try:
        if not staged.local:
            if not replace and staged.fs.exists(staged.target):
                raise ArtifactExistsError(
                    f"{staged.target} already exists; a stored version is never replaced."
                )
            staged.fs.mv(staged.tmp, staged.target)
            return
        if replace:
            os.replace(staged.tmp, staged.target)
        else:
            try:
                os.link(staged.tmp, staged.target)  # fails if the target exists
            except FileExistsError as exc:
                raise ArtifactExistsError(
                    f"{staged.target} already exists; a stored version is never replaced. "
                    "Two runs got the same save version: start runs through `kedro run` "
                    "(the run hook gives each run its own version)."
                ) from exc
            os.unlink(staged.tmp)
        sync_directory(os.path.dirname(staged.target))
    finally:
        _remove_quietly(staged.fs, staged.tmp)


def link_version(source: str, target: str) -> None:
    """Publishes ``target`` as a hard link to the stored file ``source`` (local only).

    Raises:
        ArtifactExistsError: ``target`` exists (a stored version is never replaced).
    """
    make_dirs(os.path.dirname(target) or ".")
    try:
        os.link(source, target)
    except FileExistsError as exc:
        raise ArtifactExistsError(
            f"{target} already exists; a stored version is never replaced."
        ) from exc
    sync_directory(os.path.dirname(target))


def discard(staged: StagedFile) -> None:
    """Removes a staged file that will not be published."""
    _remove_quietly(staged.fs, staged.tmp)


def atomic_write_bytes(
    fs: fsspec.AbstractFileSystem, path: str, payload: bytes, *, replace: bool = True
) -> StagedFile:
    """Writes ``payload`` to ``path`` atomically (stage + publish); returns the staged record."""
    staged = stage(fs, path, lambda out: out.write(payload))
    publish(staged, replace=replace)
    return staged


def sync_directory(path: str) -> None:
    """``fsync`` of a folder, so a rename inside it survives a power loss."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not sync folders
        pass
    finally:
        os.close(fd)


def storage_full(path: str, exc: OSError, *, written: int = 0) -> StorageFullError:
    """The error for a full disk: what ran out, where, and how to recover."""
    folder = os.path.dirname(str(path)) or "."
    what = "disk quota" if exc.errno == errno.EDQUOT else "disk space"
    try:
        usage = shutil.disk_usage(folder)
        free = f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**30:.1f} GiB"
    except OSError:
        free = "free space unknown"
    return StorageFullError(
        f"Out of {what} on the filesystem holding {folder} ({free}) while writing "
        f"{os.path.basename(str(path))} ({written} bytes written before the error). "
        "Nothing was stored and earlier versions are intact. Free space (e.g. "
        "`kedro gc --apply` removes old versions and orphaned Gram tiles) and rerun; "
        "finished Gram tiles are kept, so the rerun resumes."
    )


def sha256_file(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, int]:
    """SHA-256 hex digest and size in bytes of the file at ``path``."""
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    try:
        if is_local(fs):
            os.unlink(path)
        elif fs.exists(path):
            fs.rm(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # the original error matters more than the clean-up
        logger.warning("Could not remove temporary file %s: %s", path, exc)


remove_quietly = _remove_quietly
