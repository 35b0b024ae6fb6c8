"""Sidecars and commit markers stored beside every artifact.

Each stored file ``<file>`` has a sidecar ``<file>.meta.json`` written *before* the
file is published (so a visible artifact always has one), holding

- ``artifact``: what was stored (format, size, SHA-256, version, shape...), which
  :mod:`linearized_kedro.datasets.integrity` verifies on load;
- the provenance of the run: the settings (model, dataset, seed...), run id and
  session id, node and pipeline, versions of the node's inputs, library versions and
  git commit (docs/methods.md §4 item 17). ``hooks.ProvenanceHook`` hands these to the dataset
  before it saves; a dataset saved outside a Kedro run records only code provenance.

A version is *complete* once its run committed it: ``<file>.commit.json`` beside
the file (see ``hooks.RunsHook``). Loading "latest" means the latest complete
version, so a killed run's artifacts are never mixed with a finished run's.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from linearized_kedro.datasets.atomic import (  # noqa: F401  (re-exported names)
    atomic_write_bytes,
    remove_quietly,
    temporary_sibling,
)

SIDECAR_SUFFIX = ".meta.json"
COMMIT_SUFFIX = ".commit.json"

_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "kedro")
_PROJECT_DIST = "linearized_kedro"


def set_run_metadata(settings: dict[str, Any] | None) -> None:
    """Removed: provenance comes from ``hooks.ProvenanceHook``, not a module global.

    A module global was invisible to ``ParallelRunner``'s worker processes (every
    sidecar recorded ``None`` settings there).

    Raises:
        RuntimeError: Always, naming the replacement.
    """
    raise RuntimeError(
        "set_run_metadata() was removed: run provenance is handed to each dataset by "
        "hooks.ProvenanceHook (registered in settings.py). Outside a Kedro run, pass "
        "it explicitly with dataset.set_provenance({...}) before dataset.save(...)."
    )


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

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=source_dir, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if status else commit or None


def code_provenance() -> dict[str, Any]:
    """Library versions and git commit (the same for every artifact of a process)."""
    return {"library_versions": library_versions(), "git_commit": git_commit()}


def run_metadata(provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one save.

    Args:
        provenance: What the run knows (settings, run id, node...); ``None`` outside a
            Kedro run. JSON-converted (NumPy scalars, tuples, dataclasses).

    Returns:
        ``provenance`` plus ``library_versions``, ``git_commit`` (unless given) and an
        ISO-8601 UTC ``timestamp``.
    """
    record = json_ready(dict(provenance or {}))
    for key, value in code_provenance().items():
        record.setdefault(key, value)
    record["timestamp"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
    return record


def sidecar_path(path: str) -> str:
    """Path of the provenance file that belongs to the artifact at ``path``."""
    return f"{path}{SIDECAR_SUFFIX}"


def commit_path(path: str) -> str:
    """Path of the commit marker that belongs to the artifact at ``path``."""
    return f"{path}{COMMIT_SUFFIX}"


def encode_json(record: dict[str, Any]) -> bytes:
    """Stable JSON bytes (sorted keys, indented) of a record."""
    return json.dumps(record, indent=2, sort_keys=True, default=_json_default).encode("utf-8")


def write_sidecar(
    fs: fsspec.AbstractFileSystem,
    path: str,
    extra: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Writes ``<path>.meta.json`` atomically: :func:`run_metadata` plus ``artifact``.

    Args:
        fs: Filesystem that holds the artifact.
        path: The artifact's path on ``fs`` (the versioned path where versioned).
        extra: Artifact facts (format, size, sha256, shape...), stored under ``artifact``.
        provenance: The run's record (see :func:`run_metadata`).

    Returns:
        The sidecar's path.
    """
    record = run_metadata(provenance)
    record["artifact"] = json_ready(dict(extra or {}))
    target = sidecar_path(path)
    atomic_write_bytes(fs, target, encode_json(record))
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
    try:
        with fs.open(target, "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No provenance file {target!r}: the artifact was not written by this "
            "project's datasets (or its sidecar was deleted)."
        ) from None


def write_commit(fs: fsspec.AbstractFileSystem, path: str, record: dict[str, Any]) -> str:
    """Marks the artifact at ``path`` as part of a complete run (idempotent)."""
    target = commit_path(path)
    atomic_write_bytes(fs, target, encode_json(json_ready(record)))
    return target


def is_committed(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether the artifact at ``path`` belongs to a complete run."""
    return bool(fs.exists(commit_path(path)))


def read_commit(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """The commit record of the artifact at ``path``, or ``None`` if uncommitted."""
    try:
        with fs.open(commit_path(path), "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def json_ready(value: Any, *, strict: bool = False) -> Any:
    """``value`` with NumPy scalars/arrays, tuples, sets, paths and dataclasses made JSON types.

    Args:
        value: Any nesting of dicts, lists and the types above.
        strict: Refuse other objects (``TypeError``) instead of storing their ``str``
            (provenance records are lenient; stored data is not).
    """
    return json.loads(json.dumps(value, default=_strict_default if strict else _json_default))


def _strict_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, set, frozenset, tuple, Path)) or hasattr(
        value, "__dataclass_fields__"
    ):
        return _json_default(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)
