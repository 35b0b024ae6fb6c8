"""Provenance written beside every artifact: run settings, library versions, git commit.

``hooks.RunMetadataHook`` hands the run's settings to :func:`set_run_metadata`
before a pipeline runs; the project's datasets then call :func:`write_sidecar`
after each save, so every artifact version carries a ``<file>.meta.json`` that
says which model, dataset, seed and code produced it (SPEC §4 item 17).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import logging
import platform
import subprocess
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".meta.json"

_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "kedro")
_PROJECT_DIST = "linearized_kedro"

_run_settings: dict[str, Any] = {}


def set_run_metadata(settings: dict[str, Any] | None) -> None:
    """Records the settings of the current run (model, dataset, seed, ...).

    Args:
        settings: JSON-serialisable mapping; replaces what was set before.
            ``None`` clears it.
    """
    global _run_settings
    _run_settings = json.loads(json.dumps(dict(settings or {}), default=_json_default))


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries that determine the numbers.

    Returns:
        ``{"python", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "kedro",
        "linearized_kedro"}`` → version string, or ``None`` where not installed.
    """
    return dict(_library_versions())


@functools.cache
def _library_versions() -> tuple[tuple[str, str | None], ...]:
    versions: list[tuple[str, str | None]] = [("python", platform.python_version())]
    for name in (*_LIBRARIES, _PROJECT_DIST):
        try:
            versions.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            versions.append((name, None))
    return tuple(versions)


@functools.cache
def git_commit() -> str | None:
    """The commit of the project's source tree, with ``+dirty`` for local changes.

    Returns:
        A 40-hex-digit commit id (possibly suffixed ``+dirty``), or ``None`` where
        the code is not in a git checkout or git is unavailable.
    """
    source_dir = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source_dir,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if status else commit or None


def run_metadata() -> dict[str, Any]:
    """The provenance of the current run.

    Returns:
        The settings given to :func:`set_run_metadata` plus ``library_versions``,
        ``git_commit`` and an ISO-8601 UTC ``timestamp``.
    """
    return {
        **json.loads(json.dumps(_run_settings)),
        "library_versions": library_versions(),
        "git_commit": git_commit(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def sidecar_path(path: str) -> str:
    """Path of the provenance file that belongs to the artifact at ``path``."""
    return f"{path}{SIDECAR_SUFFIX}"


def write_sidecar(fs: fsspec.AbstractFileSystem, path: str, extra: dict[str, Any] | None = None):
    """Writes ``<path>.meta.json`` with :func:`run_metadata` plus ``extra``.

    Written to a temporary file and renamed, so a reader never sees half a file.

    Args:
        fs: Filesystem that holds the artifact.
        path: The artifact's path on ``fs`` (the versioned path where versioned).
        extra: Artifact-specific facts (shape, dtype, checksum, ...), stored under
            ``"artifact"``.

    Returns:
        The sidecar's path.
    """
    record = run_metadata()
    record["artifact"] = dict(extra or {})
    text = json.dumps(record, indent=2, sort_keys=True, default=_json_default)
    target = sidecar_path(path)
    atomic_write_bytes(fs, target, text.encode("utf-8"))
    return target


def read_sidecar(filepath: str, fs: fsspec.AbstractFileSystem | None = None) -> dict[str, Any]:
    """Reads the provenance written beside an artifact.

    Args:
        filepath: Path (or fsspec URL) of the artifact itself, e.g. the versioned
            ``.../prepared_inputs.npy/<version>/prepared_inputs.npy``.
        fs: Filesystem; inferred from ``filepath`` when omitted.

    Raises:
        FileNotFoundError: If the artifact has no sidecar.
    """
    if fs is None:
        fs, filepath = fsspec.core.url_to_fs(str(filepath))
    target = sidecar_path(str(filepath))
    if not fs.exists(target):
        raise FileNotFoundError(
            f"No provenance file {target!r}: the artifact was not written by this "
            "project's datasets (or its sidecar was deleted)."
        )
    with fs.open(target, "r") as handle:
        return json.load(handle)


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, path: str, payload: bytes) -> None:
    """Writes ``payload`` to a temporary sibling of ``path`` and renames it into place."""
    tmp = temporary_sibling(path)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(payload)
        fs.mv(tmp, path)
    except BaseException:
        remove_quietly(fs, tmp)
        raise


def temporary_sibling(path: str) -> str:
    """A fresh name beside ``path`` for a file being written (same filesystem, so renames are cheap)."""
    parent, _, name = str(path).rpartition("/")
    tmp_name = f".{name}.{uuid.uuid4().hex[:12]}.partial"
    return f"{parent}/{tmp_name}" if parent else tmp_name


def remove_quietly(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Deletes ``path`` if it exists, logging instead of raising on failure."""
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError as exc:  # the original error matters more than the clean-up
        logger.warning("Could not remove temporary file %s: %s", path, exc)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)
