"""The run registry: one folder per run under ``data/.runs``, claimed atomically.

Kedro names a run's versions after the session id, a millisecond timestamp: two
processes started in the same millisecond got the same save version and the second
crashed ("Save path ... must not exist"). A run now *claims* its version with an
exclusive ``mkdir`` of ``data/.runs/<version>``; if another run holds that name, the
next millisecond is tried. The folder holds

- ``run.json``: the run's manifest (session id, pipelines, nodes, input versions,
  status ``running`` → ``complete`` | ``failed``, or ``refused`` when a check before
  the first node stopped it), rewritten atomically;
- ``lock``: ``flock``-ed by the running process, so a killed run is recognisably
  not running (the kernel drops the lock) and ``kedro gc`` leaves live runs alone;
- ``commits/<pipeline>.json``: which pipelines of the run committed their artifacts.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import fsspec
from kedro.io.core import VERSION_FORMAT

from linearized_kedro.datasets import atomic
from linearized_kedro.datasets.metadata import encode_json, json_ready

RUNS_DIR = Path("data") / ".runs"
MANIFEST = "run.json"
LOCK = "lock"
_local_fs = fsspec.filesystem("file")


def runs_dir(project_path: str | os.PathLike) -> Path:
    """The run registry of a project."""
    return Path(project_path) / RUNS_DIR


def next_version(version: str) -> str:
    """The version one millisecond after ``version`` (Kedro's timestamp format)."""
    try:
        stamp = _dt.datetime.strptime(version, VERSION_FORMAT)
    except ValueError:
        head, _, count = version.rpartition("-n")
        if head and count.isdigit():
            return f"{head}-n{int(count) + 1}"
        return f"{version}-n1"
    text = (stamp + _dt.timedelta(milliseconds=1)).strftime(VERSION_FORMAT)
    return text[:-4] + text[-1:]  # milliseconds, as kedro.io.core.generate_timestamp


def claim_run_id(registry: Path, proposed: str, attempts: int = 100_000) -> str:
    """Claims a run id no other run of this project has: ``proposed`` or the next free one.

    Args:
        registry: The ``data/.runs`` folder.
        proposed: Kedro's session id (a timestamp).
        attempts: Give up after this many taken names (never reached in practice).

    Returns:
        The claimed id; its folder ``registry/<id>`` now exists.
    """
    atomic.make_dirs(str(registry))
    version = proposed
    for _ in range(attempts):
        try:
            os.mkdir(registry / version)
            os.chmod(registry / version, atomic.dir_mode())
            return version
        except FileExistsError:
            version = next_version(version)
    raise RuntimeError(f"Could not claim a run id in {registry} after {attempts} attempts.")


class RunLock:
    """The ``flock`` a running process holds on ``<run folder>/lock``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, atomic.file_mode())
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def run_is_live(run_dir: Path) -> bool:
    """Whether a process still holds the run's lock (a killed run does not)."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def write_manifest(run_dir: Path, record: dict[str, Any]) -> None:
    """Writes ``run.json`` atomically."""
    atomic.atomic_write_bytes(_local_fs, str(Path(run_dir) / MANIFEST), encode_json(record))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest (``{}`` if it was never written)."""
    try:
        return json.loads((Path(run_dir) / MANIFEST).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def update_manifest(run_dir: Path, **changes: Any) -> None:
    """Merges ``changes`` into ``run.json`` (the main process is its only writer)."""
    record = read_manifest(run_dir)
    record.update(json_ready(changes))
    write_manifest(run_dir, record)


def record_commit(run_dir: Path, pipeline: str, record: dict[str, Any]) -> None:
    """Notes in the registry that ``pipeline`` of the run committed its artifacts."""
    folder = Path(run_dir) / "commits"
    atomic.make_dirs(str(folder))
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in pipeline)
    atomic.atomic_write_bytes(_local_fs, str(folder / f"{safe}.json"), encode_json(record))


def run_status(run_dir: Path) -> str:
    """``running``, ``complete``, ``failed``, ``refused`` or ``killed`` (not live, not finished)."""
    status = read_manifest(run_dir).get("status", "running")
    if status == "running" and not run_is_live(run_dir):
        return "killed"
    return status


def list_runs(registry: Path) -> list[dict[str, Any]]:
    """Every run of the registry, newest first: id, status and manifest."""
    if not Path(registry).is_dir():
        return []
    runs = []
    for folder in sorted(Path(registry).iterdir(), reverse=True):
        if folder.is_dir():
            runs.append(
                {"run_id": folder.name, "status": run_status(folder), **read_manifest(folder)}
            )
            runs[-1]["status"] = run_status(folder)
    return runs
