"""Integrity on load: the SHA-256 recorded at save is checked before data is used.

A flipped byte in a stored ``eigenvalues.npy`` used to be loaded and plotted without
a word. Every load now compares the file's size and SHA-256 with its sidecar. The
hash is computed once per process for each file state (device, inode, size, mtime),
so a session that loads the same artifact in several nodes pays for it once, and
hard-linked copies (deduplicated versions) share the check.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec
from kedro.io.core import DatasetError

from linearized_kedro.datasets.atomic import is_local, sha256_file
from linearized_kedro.datasets.metadata import sidecar_path

_verified: dict[tuple[Any, ...], str] = {}
_lock = threading.Lock()


class IntegrityError(DatasetError):
    """A stored artifact's bytes differ from what its sidecar recorded at save time."""


def file_state(fs: fsspec.AbstractFileSystem, path: str) -> tuple[Any, ...]:
    """A key that changes whenever the file's bytes could have changed."""
    if is_local(fs):
        st = os.stat(path)
        return ("local", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    info = fs.info(path)
    return ("remote", path, info.get("size"), info.get("ETag") or info.get("mtime"))


def verify_file(
    fs: fsspec.AbstractFileSystem, path: str, artifact: dict[str, Any], *, recover: str = ""
) -> None:
    """Checks the file at ``path`` against the ``artifact`` record of its sidecar.

    Args:
        fs: Filesystem of ``path``.
        path: The stored file.
        artifact: ``sidecar["artifact"]`` (``sha256`` and, where recorded, ``size``).
        recover: Extra advice appended to the error (e.g. the versions to pin).

    Raises:
        IntegrityError: Size or SHA-256 differ; the message names the file and the fix.
    """
    expected = artifact.get("sha256")
    if not expected:
        return
    state = file_state(fs, path)
    with _lock:
        if _verified.get(state) == expected:
            return
    size = state[3] if state[0] == "local" else state[2]
    expected_size = artifact.get("size")
    if expected_size is not None and size is not None and int(size) != int(expected_size):
        raise _corrupted(path, f"{size} bytes instead of the {expected_size} recorded", recover)
    actual, _ = sha256_file(fs, path)
    if actual != expected:
        raise _corrupted(
            path, f"SHA-256 {actual[:16]}… instead of the {expected[:16]}… recorded", recover
        )
    with _lock:
        _verified[state] = expected


def forget_verifications() -> None:
    """Clears the per-process cache (tests; or after repairing files by hand)."""
    with _lock:
        _verified.clear()


def _corrupted(path: str, what: str, recover: str) -> IntegrityError:
    folder = os.path.dirname(path)
    return IntegrityError(
        f"Stored artifact {path} is corrupted: {what} in {sidecar_path(path)}. Its "
        "contents cannot be trusted and were not loaded. To recover, delete the version "
        f"folder {folder} and rerun the pipeline that produces it, or load another "
        "version with `kedro run --load-versions <dataset>:<version>`; `kedro verify` "
        f"checks every stored artifact.{(' ' + recover) if recover else ''}"
    )
