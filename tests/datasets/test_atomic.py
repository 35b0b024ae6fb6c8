"""Atomic writes: previous state or the complete new file, never a part; full disks named."""

from __future__ import annotations

import errno
import json
import os
import stat

import fsspec
import pytest
from kedro_datasets.json import JSONDataset as InPlaceJSONDataset

from linearized_kedro.datasets import JSONDataset, StorageFullError, atomic

LOCAL = fsspec.filesystem("file")


class _Crash(BaseException):
    """Stands for the process dying mid-write (not an Exception: nothing may catch it)."""


def _failing_writer(monkeypatch, after_bytes: int, error: BaseException) -> None:
    """Makes every write through HashingWriter fail once ``after_bytes`` were written."""
    original = atomic.HashingWriter.write

    def write(self, data):
        if self.size + len(memoryview(data).cast("B")) > after_bytes:
            allowed = max(0, after_bytes - self.size)
            if allowed:
                original(self, memoryview(data).cast("B")[:allowed])
            raise error
        return original(self, data)

    monkeypatch.setattr(atomic.HashingWriter, "write", write)


def test_replace_is_all_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    atomic.atomic_write_bytes(LOCAL, str(target), b'{"old": 1}')
    _failing_writer(monkeypatch, 5, _Crash())
    with pytest.raises(_Crash):
        atomic.atomic_write_bytes(LOCAL, str(target), b'{"new": 2, "pad": "' + b"x" * 100 + b'"}')
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_in_place_writer_leaves_a_truncated_file_negative_control(tmp_path, monkeypatch):
    """kedro-datasets' JSONDataset (the first wave's) under the same fault: a torn file."""
    path = tmp_path / "report.json"
    InPlaceJSONDataset(filepath=str(path)).save({"old": 1})
    local_fs = type(LOCAL)
    real_open = local_fs.open

    def torn_open(self, p, mode="rb", **kw):
        handle = real_open(self, p, mode, **kw)
        if "w" in mode:
            handle.write(b'{"new"')
            handle.close()
            raise _Crash()
        return handle

    monkeypatch.setattr(local_fs, "open", torn_open)
    with pytest.raises(_Crash):
        InPlaceJSONDataset(filepath=str(path)).save({"new": 2})
    monkeypatch.undo()
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())


def test_disk_full_names_what_and_where_and_leaves_nothing(tmp_path, monkeypatch):
    dataset = JSONDataset(filepath=str(tmp_path / "r.json"), version=None)
    dataset.save({"old": 1})
    before = sorted(p.name for p in tmp_path.iterdir())
    _failing_writer(monkeypatch, 8, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StorageFullError) as info:
        dataset.save({"new": list(range(100))})
    message = str(info.value)
    assert "Out of disk space" in message and str(tmp_path) in message
    assert "r.json" in message and "8 bytes written" in message and "kedro gc" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert json.loads((tmp_path / "r.json").read_text()) == {"old": 1}


def test_quota_is_named_as_quota(tmp_path, monkeypatch):
    _failing_writer(monkeypatch, 0, OSError(errno.EDQUOT, "Disk quota exceeded"))
    with pytest.raises(StorageFullError, match="Out of disk quota"):
        atomic.atomic_write_bytes(LOCAL, str(tmp_path / "a.bin"), b"abc")


def test_other_os_errors_are_not_called_disk_full(tmp_path, monkeypatch):
    _failing_writer(monkeypatch, 0, OSError(errno.EIO, "I/O error"))
    with pytest.raises(OSError) as info:
        atomic.atomic_write_bytes(LOCAL, str(tmp_path / "a.bin"), b"abc")
    assert not isinstance(info.value, StorageFullError)
    assert list(tmp_path.iterdir()) == []


def test_publish_never_replaces_without_being_asked(tmp_path):
    target = tmp_path / "v" / "a.npy"
    atomic.atomic_write_bytes(LOCAL, str(target), b"first", replace=False)
    with pytest.raises(atomic.ArtifactExistsError, match="never replaced"):
        atomic.atomic_write_bytes(LOCAL, str(target), b"second", replace=False)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.npy"]


def test_files_are_group_readable_even_under_a_private_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        atomic.atomic_write_bytes(LOCAL, str(tmp_path / "sub" / "a.bin"), b"x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "sub" / "a.bin").stat().st_mode)
    assert mode & 0o040 and mode & 0o600 == 0o600
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) & 0o050 == 0o050


def test_staged_file_records_hash_and_size(tmp_path):
    import hashlib

    staged = atomic.atomic_write_bytes(LOCAL, str(tmp_path / "a.bin"), b"hello")
    assert staged.size == 5 and staged.sha256 == hashlib.sha256(b"hello").hexdigest()
