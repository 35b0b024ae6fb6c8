"""Persisted Gram tiles: an interrupted NTK computation resumes, concurrent runs share safely.

The dataset's ``load()`` returns a factory ``factory(fingerprint, description) ->
GramBlockStore``. A computation is identified by a fingerprint (a hash of the inputs,
θ0 and the tiling); its tiles live in ``<root>/<fingerprint>/tile_<i>_<j>.<digest>.npy``.

- **Atomic, self-verifying tiles.** Each tile is written to a temporary file and
  renamed into place; its name carries the first 16 hex digits of its SHA-256, so a
  tile whose bytes changed on disk is detected, dropped and recomputed.
- **Leases.** Opening a store takes a lease for the run (a file under
  ``<fingerprint>/.leases/``). :meth:`GramBlockStore.clear` — called once the
  spectrum is saved — releases the run's lease and deletes the folder only when no
  *live* lease remains, so two identical runs can share (and resume from) each
  other's tiles without one deleting the folder under the other. A lease is live
  while its process runs (same host: the pid exists and started when the lease was
  taken, so a reused pid does not count) or, from another host, while its heartbeat
  (refreshed on every tile written) is younger than ``lease_ttl_s``. A killed run's
  lease is therefore never held forever.
- Lease changes and deletions happen under an ``flock`` on the root folder
  (released by the kernel if the holder dies).
- Files are group-readable; a full disk is a :class:`~.atomic.StorageFullError`
  naming the tile folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
from kedro.io import AbstractDataset, DatasetError

from linearized_kedro.datasets import atomic

logger = logging.getLogger(__name__)

_TILE = re.compile(r"^tile_(\d+)_(\d+)(?:\.([0-9a-f]{16}))?\.npy$")
_FINGERPRINT = re.compile(r"[0-9a-zA-Z_-]+")
LEASES = ".leases"
DEFAULT_LEASE_TTL_S = 6 * 3600.0
_HEARTBEAT_EVERY_S = 30.0
_local_fs = fsspec.filesystem("file")


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` if it is gone.

    A zombie (killed, not yet reaped) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None if not _pid_exists(pid) else -1
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_is_live(lease: dict[str, Any], mtime: float, ttl_s: float, now: float) -> bool:
    """Whether a lease (its record and the file's mtime, the heartbeat) still holds."""
    if lease.get("host") == socket.gethostname():
        pid = lease.get("pid")
        if not isinstance(pid, int):
            return False
        started = process_start_ticks(pid)
        if started is None:
            return False
        recorded = lease.get("proc_start")
        return started == -1 or recorded is None or started == recorded
    return now - mtime < ttl_s


def read_leases(directory: Path) -> list[tuple[Path, dict[str, Any], float]]:
    """Every lease file of a tile folder: (path, record, mtime)."""
    folder = Path(directory) / LEASES
    found = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            record, mtime = {}, 0.0
        found.append((path, record, mtime))
    return found


def live_leases(directory: Path, ttl_s: float = DEFAULT_LEASE_TTL_S) -> list[dict[str, Any]]:
    """The records of the leases on ``directory`` that still hold."""
    now = time.time()
    return [
        rec for _, rec, mtime in read_leases(directory) if lease_is_live(rec, mtime, ttl_s, now)
    ]


@contextlib.contextmanager
def root_lock(root: Path):
    """Exclusive ``flock`` on the tile root folder itself (the kernel drops it if we die).

    Locking the folder, not a lock file, leaves nothing behind in it.
    """
    atomic.make_dirs(str(root))
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_unleased(directory: Path, ttl_s: float = DEFAULT_LEASE_TTL_S) -> bool:
    """Deletes a tile folder if no live lease holds it (call under :func:`root_lock`).

    Returns:
        Whether the folder was deleted.
    """
    holders = live_leases(directory, ttl_s)
    if holders:
        logger.info(
            "Keeping Gram tiles %s: still used by %s.",
            directory,
            ", ".join(str(h.get("lease_id")) for h in holders),
        )
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not Path(directory).exists()


class GramBlockStore:
    """Tiles of one Gram computation, keyed by ``(i, j)`` block indices (i <= j).

    Opening the store takes a lease for ``lease_id`` (the run id where known).
    """

    def __init__(
        self,
        root: Path,
        fingerprint: str,
        description: dict[str, Any] | None = None,
        *,
        lease_id: str | None = None,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ):
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise ValueError(f"Invalid Gram fingerprint {fingerprint!r}.")
        self.root = Path(root)
        self.directory = self.root / fingerprint
        self.lease_id = lease_id or f"{socket.gethostname()}-{os.getpid()}"
        if not _FINGERPRINT.fullmatch(self.lease_id.replace(".", "_").replace(":", "_")):
            raise ValueError(f"Invalid lease id {self.lease_id!r}.")
        self.lease_ttl_s = float(lease_ttl_s)
        self._last_heartbeat = 0.0
        with root_lock(self.root):
            atomic.make_dirs(str(self.directory / LEASES))
            info = self.directory / "computation.json"
            if description is not None and not info.exists():
                payload = json.dumps(description, indent=2, sort_keys=True, default=str)
                atomic.atomic_write_bytes(_local_fs, str(info), payload.encode())
            self._write_lease()

    @property
    def lease_path(self) -> Path:
        return self.directory / LEASES / f"{self.lease_id}.json"

    def _write_lease(self) -> None:
        pid = os.getpid()
        record = {
            "lease_id": self.lease_id,
            "host": socket.gethostname(),
            "pid": pid,
            "proc_start": process_start_ticks(pid),
            "taken": time.time(),
        }
        atomic.atomic_write_bytes(_local_fs, str(self.lease_path), json.dumps(record).encode())
        self._last_heartbeat = time.time()

    def _heartbeat(self) -> None:
        now = time.time()
        if now - self._last_heartbeat < _HEARTBEAT_EVERY_S:
            return
        try:
            os.utime(self.lease_path)
        except FileNotFoundError:  # released or removed by gc while we were away
            with root_lock(self.root):
                atomic.make_dirs(str(self.directory / LEASES))
                self._write_lease()
        self._last_heartbeat = now

    def _tile_files(self) -> list[tuple[tuple[int, int], str | None, Path]]:
        found = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return found
        for name in names:
            match = _TILE.match(name)
            if match:
                key = (int(match.group(1)), int(match.group(2)))
                found.append((key, match.group(3), self.directory / name))
        return sorted(found)

    def keys(self) -> list[tuple[int, int]]:
        """Block indices of the tiles already stored."""
        return sorted({key for key, _, _ in self._tile_files()})

    def load_all(self) -> dict[tuple[int, int], np.ndarray]:
        """All stored tiles; a tile that cannot be read or fails its digest is dropped."""
        tiles = {}
        for key, digest, path in self._tile_files():
            if key in tiles:
                continue
            try:
                payload = path.read_bytes()
                if digest and hashlib.sha256(payload).hexdigest()[:16] != digest:
                    raise ValueError("its bytes do not match the digest in its name")
                tiles[key] = np.load(io.BytesIO(payload), allow_pickle=False)
            except (OSError, ValueError) as err:
                logger.warning("Dropping Gram tile %s (%s); it will be recomputed.", path, err)
                with contextlib.suppress(OSError):
                    path.unlink()
        return tiles

    def put(self, key: tuple[int, int], tile: np.ndarray) -> None:
        """Stores one finished tile atomically (and refreshes this run's lease)."""
        i, j = (int(v) for v in key)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(tile), allow_pickle=False)
        payload = buffer.getvalue()
        digest = hashlib.sha256(payload).hexdigest()[:16]
        path = self.directory / f"tile_{i}_{j}.{digest}.npy"
        if not self.directory.is_dir():
            raise DatasetError(
                f"Gram tile folder {self.directory} disappeared while this run held a "
                "lease on it (removed by hand?). Rerun; finished tiles of other runs are "
                "reused."
            )
        atomic.atomic_write_bytes(_local_fs, str(path), payload)
        self._heartbeat()

    def release(self) -> None:
        """Gives up this run's lease without deleting anything."""
        with root_lock(self.root):
            with contextlib.suppress(FileNotFoundError):
                self.lease_path.unlink()

    def clear(self) -> bool:
        """Releases this run's lease; deletes the tiles if no other live run uses them.

        Returns:
            Whether the folder was deleted.
        """
        with root_lock(self.root):
            with contextlib.suppress(FileNotFoundError):
                self.lease_path.unlink()
            return remove_unleased(self.directory, self.lease_ttl_s)


class GramBlockStoreFactory:
    """Opens the tile store of one computation under a root folder (with the run's lease)."""

    def __init__(self, root: Path, lease_id: str | None = None, lease_ttl_s: float | None = None):
        self.root = Path(root)
        self.lease_id = lease_id
        self.lease_ttl_s = DEFAULT_LEASE_TTL_S if lease_ttl_s is None else float(lease_ttl_s)

    def __call__(self, fingerprint: str, description: dict[str, Any] | None = None):
        return GramBlockStore(
            self.root,
            fingerprint,
            description,
            lease_id=self.lease_id,
            lease_ttl_s=self.lease_ttl_s,
        )


class GramBlockStoreDataset(AbstractDataset[None, GramBlockStoreFactory]):
    """Catalog entry for resumable Gram tiles (local paths only).

    ``load()`` returns a factory: ``factory(fingerprint, description) -> GramBlockStore``.
    ``hooks.RunsHook`` binds it to the run, so the run's lease is named after the run.
    """

    def __init__(
        self,
        path: str,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        metadata: dict[str, Any] | None = None,
    ):
        """Args:
        path: Root folder of the tiles (one subfolder per computation).
        lease_ttl_s: How long a lease taken on another host holds without a heartbeat.
        metadata: Free-form (e.g. ``kedro-viz: {layer: feature}``).
        """
        self._root = Path(path)
        self._lease_ttl_s = float(lease_ttl_s)
        self._run_id: str | None = None
        self.metadata = metadata

    def bind_run(self, run_id: str | None, **_: Any) -> None:
        """Names this run's leases after ``run_id`` (shared by all of the run's processes)."""
        self._run_id = run_id

    def load(self) -> GramBlockStoreFactory:
        return GramBlockStoreFactory(self._root, self._run_id, self._lease_ttl_s)

    def save(self, data: None) -> None:
        raise DatasetError("Gram tiles are written by the ntk_spectrum node, not saved.")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "lease_ttl_s": self._lease_ttl_s}

    def _exists(self) -> bool:
        return True
