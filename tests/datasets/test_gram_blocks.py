"""Gram tiles: shared by concurrent runs under leases, self-verifying, group-readable."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from linearized_kedro.datasets import GramBlockStoreDataset, StorageFullError, atomic
from linearized_kedro.datasets import gram_blocks as gb

FP = "abc123"


def _store(root, run_id, **kw):
    dataset = GramBlockStoreDataset(str(root), **kw)
    dataset.bind_run(run_id)
    return dataset.load()(FP, {"n": 4})


def test_two_runs_share_tiles_and_the_first_to_finish_keeps_them_for_the_other(tmp_path):
    slow, fast = _store(tmp_path, "run-A"), _store(tmp_path, "run-B")
    slow.put((0, 0), np.eye(2))
    assert set(fast.load_all()) == {(0, 0)}  # resumption from the other run's tile
    fast.put((0, 1), np.ones((2, 2)))
    assert fast.clear() is False  # run A still holds a lease
    slow.put((1, 1), np.full((2, 2), 3.0))  # the first wave crashed here (folder deleted)
    assert sorted(slow.load_all()) == [(0, 0), (0, 1), (1, 1)]
    assert slow.clear() is True
    assert not (tmp_path / FP).exists()


def test_a_killed_runs_lease_is_not_held_forever(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from linearized_kedro.datasets import GramBlockStoreDataset
        ds = GramBlockStoreDataset({str(tmp_path)!r}); ds.bind_run("run-killed")
        ds.load()({FP!r}, {{}})
        print("leased", flush=True)
        time.sleep(60)
        """
    )
    src = str(Path(gb.__file__).resolve().parents[2])  # this checkout's sources
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "leased"
        survivor = _store(tmp_path, "run-B")
        assert survivor.clear() is False  # negative control: the killed run is still alive
        survivor = _store(tmp_path, "run-B")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert survivor.clear() is True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lease_liveness_rules():
    host, me = socket.gethostname(), os.getpid()
    start = gb.process_start_ticks(me)
    now = time.time()
    live = {"host": host, "pid": me, "proc_start": start}
    assert gb.lease_is_live(live, mtime=0.0, ttl_s=1.0, now=now)  # same host: pid decides
    assert not gb.lease_is_live({**live, "proc_start": start + 1}, 0.0, 1.0, now)  # pid reused
    assert not gb.lease_is_live({**live, "pid": 2**22 + 12345}, now, 1.0, now)  # no such pid
    other = {"host": host + "-elsewhere", "pid": 1}
    assert gb.lease_is_live(other, mtime=now - 10, ttl_s=60, now=now)
    assert not gb.lease_is_live(other, mtime=now - 120, ttl_s=60, now=now)  # no heartbeat


def test_a_tile_whose_bytes_changed_is_dropped_and_recomputed(tmp_path):
    store = _store(tmp_path, "run-A")
    store.put((0, 0), np.eye(3))
    store.put((0, 1), np.ones((3, 3)))
    (tile,) = (tmp_path / FP).glob("tile_0_1.*.npy")
    payload = bytearray(tile.read_bytes())
    payload[-1] ^= 0x40
    tile.write_bytes(bytes(payload))
    tiles = store.load_all()
    assert set(tiles) == {(0, 0)} and not tile.exists()
    np.testing.assert_array_equal(tiles[(0, 0)], np.eye(3))


def test_tiles_are_group_readable_under_a_private_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        _store(tmp_path, "run-A").put((0, 0), np.eye(2))
    finally:
        os.umask(previous)
    (tile,) = (tmp_path / FP).glob("tile_*.npy")
    assert stat.S_IMODE(tile.stat().st_mode) & 0o040
    assert stat.S_IMODE((tmp_path / FP).stat().st_mode) & 0o050 == 0o050


def test_a_full_disk_during_a_tile_write_names_the_tile_folder(tmp_path, monkeypatch):
    store = _store(tmp_path, "run-A")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.HashingWriter, "write", full)
    with pytest.raises(StorageFullError) as info:
        store.put((0, 0), np.eye(2))
    assert str(tmp_path / FP) in str(info.value) and "Out of disk space" in str(info.value)
    assert not list((tmp_path / FP).glob("*tile*"))


def test_the_lease_names_the_run_and_survives_heartbeats(tmp_path, monkeypatch):
    monkeypatch.setattr(gb, "_HEARTBEAT_EVERY_S", 0.0)
    store = _store(tmp_path, "2026-01-01T00.00.00.000Z")
    record = json.loads(store.lease_path.read_text())
    assert record["lease_id"] == "2026-01-01T00.00.00.000Z" and record["pid"] == os.getpid()
    store.lease_path.unlink()  # e.g. removed by hand: the next heartbeat retakes it
    store.put((0, 0), np.eye(2))
    assert store.lease_path.exists()
