"""datasets.raw.fetch: local lookup, pooch downloads from a local HTTP server, offline and
disk-full errors that name the fix."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from official_formats import http_server, idx_splits, write_cifar10_binary, write_idx
from tqdm import tqdm

from linearized_kedro.datasets.raw import fetch
from linearized_kedro.datasets.raw.dataset import RawImageDataset
from linearized_kedro.datasets.raw.errors import (
    ChecksumMismatchError,
    DownloadError,
    MissingRawFilesError,
    NoSpaceError,
)
from linearized_kedro.datasets.raw.formats import SPLIT_KEYS
from linearized_kedro.datasets.raw.specs import (
    DatasetSpec,
    FileRole,
    RawFile,
    register_dataset,
    unregister_dataset,
)

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP with one good file; yields (folder, base_url, requests)."""
    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "file.bin").write_bytes(b"official payload " * 1000)
    with http_server(folder) as (base, requests):
        yield folder, base, requests


def test_download_verifies_and_caches(tmp_path, served):
    folder, base, requests = served
    good = _sha((folder / "file.bin").read_bytes())
    target = tmp_path / "raw" / "file.bin"
    assert fetch.download_file([base + "file.bin"], target, [good], show_progress=False) == good
    assert target.read_bytes() == (folder / "file.bin").read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary left
    # pooch's cache: a file that already matches is not fetched again.
    fetch.download_file([base + "file.bin"], target, [good], show_progress=False)
    assert requests == ["/file.bin"]


def test_corrupted_download_is_refused_and_not_left_in_place(tmp_path, served):
    folder, base, _ = served
    good = _sha((folder / "file.bin").read_bytes())
    (folder / "file.bin").write_bytes(b"official payload " * 999 + b"damaged payload  ")
    got = _sha((folder / "file.bin").read_bytes())
    target = tmp_path / "raw" / "file.bin"
    with pytest.raises(ChecksumMismatchError) as info:
        fetch.download_file([base + "file.bin"], target, [good], show_progress=False)
    message = str(info.value)
    assert f"Checksum mismatch for the download of file.bin: expected {good}" in message
    assert f"{base}file.bin served {got}" in message
    assert f"nothing was left in {target.parent}/" in message
    assert not target.exists() and list(target.parent.iterdir()) == []
    # Negative control: the same call accepts the bytes when they are the expected ones.
    assert fetch.download_file([base + "file.bin"], target, [got], show_progress=False) == got


def test_mirrors_are_tried_in_order(tmp_path, served):
    folder, base, requests = served
    good = _sha((folder / "file.bin").read_bytes())
    target = tmp_path / "raw" / "file.bin"
    dead = f"http://127.0.0.1:{_closed_port()}/file.bin"
    urls = [base + "missing/file.bin", dead, base + "file.bin"]
    assert fetch.download_file(urls, target, [good], show_progress=False) == good
    assert requests == ["/missing/file.bin", "/file.bin"]
    target.unlink()
    with pytest.raises(DownloadError, match=r"Could not download file.bin: .*404.*Connection"):
        fetch.download_file(urls[:2], target, [good], show_progress=False)
    assert list(target.parent.iterdir()) == []


@contextmanager
def _full_disk_after(limit: int):
    """An output file that accepts ``limit`` bytes, then fails as a full disk does."""

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle
            self.size = 0

        def write(self, data):
            if self.size + len(data) > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.size += len(data)
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    @contextmanager
    def opener(path):
        with open(path, "wb") as handle:
            yield FullDisk(handle)

    yield opener


def test_disk_full_names_what_ran_out_and_where(tmp_path, served, monkeypatch):
    folder, base, _ = served
    good = _sha((folder / "file.bin").read_bytes())
    target = tmp_path / "raw" / "file.bin"
    with _full_disk_after(4096) as opener:
        monkeypatch.setattr(fetch, "_open_output", opener)
        with pytest.raises(NoSpaceError) as info:
            fetch.download_file([base + "file.bin"], target, [good], show_progress=False)
    message = str(info.value)
    assert message.startswith(
        f"No space left on device while downloading file.bin into {target.parent}/"
    )
    assert "MiB were written" in message and "MiB are free there now" in message
    assert "point the raw_images catalog entry's root at a disk with room" in message
    assert info.value.errno == errno.ENOSPC and info.value.directory == str(target.parent)
    assert list(target.parent.iterdir()) == []  # the partial file was removed
    # Negative control: the same download with a working disk succeeds.
    monkeypatch.undo()
    assert fetch.download_file([base + "file.bin"], target, [good], show_progress=False) == good


def test_download_without_checksum_or_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="without a checksum"):
        fetch.download_file(["http://127.0.0.1:9/x"], tmp_path / "x", [], show_progress=False)
    with pytest.raises(DownloadError, match="No download source"):
        fetch.download_file([], tmp_path / "x", ["md5:" + "0" * 32], show_progress=False)
    with pytest.raises(DownloadError, match="Unrecognized URL protocol 'file'"):
        fetch.download_file(["file:///x"], tmp_path / "x", ["md5:" + "0" * 32], show_progress=False)


def _served_idx_spec(name: str, base: str, sums: dict[str, str]) -> DatasetSpec:
    """An IDX dataset whose files are downloadable from ``base``."""
    return DatasetSpec(
        name=name,
        reader="idx",
        image_shape=(5, 4, 1),
        classes=("left", "right"),
        num_train=12,
        num_test=6,
        files=tuple(
            FileRole(role, (RawFile(f"{stem}.gz", (sums[f"{stem}.gz"],), (base + f"{stem}.gz",)),))
            for role, stem in zip(SPLIT_KEYS, IDX_STEMS, strict=True)
        ),
    )


def test_a_served_dataset_downloads_through_the_kedro_dataset(tmp_path):
    sums = write_idx(tmp_path / "server", "toy", 12, 6, seed=2, shape=(5, 4), num_classes=2)
    with http_server(tmp_path / "server") as (base, requests):
        register_dataset(_served_idx_spec("toy_served", base, sums))
        try:
            dataset = RawImageDataset(dataset="toy_served", root=str(tmp_path / "raw"))
            assert not dataset.exists()
            out = dataset.load()
            assert dataset.exists() and sorted(requests) == sorted(f"/{s}.gz" for s in IDX_STEMS)
            out_again = dataset.load()  # cached: no second download
            assert len(requests) == 4
        finally:
            unregister_dataset("toy_served")
    ref = idx_splits(12, 6, 2, (5, 4), 2)
    np.testing.assert_array_equal(out["train_images"][..., 0], ref[0])
    np.testing.assert_array_equal(out_again["test_labels"], ref[3])
    assert set(out["files"]) == {
        str(tmp_path / "raw" / "toy_served" / f"{s}.gz") for s in IDX_STEMS
    }


def test_always_replaces_a_corrupt_local_file(tmp_path):
    sums = write_idx(tmp_path / "server", "toy", 12, 6, seed=2, shape=(5, 4), num_classes=2)
    local = tmp_path / "raw" / "toy_served"
    shutil.copytree(tmp_path / "server", local)
    (local / "train-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    with http_server(tmp_path / "server") as (base, requests):
        spec = _served_idx_spec("toy_served", base, sums)
        # auto: a corrupt local file is an error that names it, never silently replaced.
        with pytest.raises(ChecksumMismatchError, match="train-labels-idx1-ubyte.gz"):
            fetch.locate_files(spec, tmp_path / "raw", "auto", show_progress=False)
        located = fetch.locate_files(spec, tmp_path / "raw", "always", show_progress=False)
    assert requests == ["/train-labels-idx1-ubyte.gz"]
    assert [f.role for f in located] == list(SPLIT_KEYS)
    assert (local / "train-labels-idx1-ubyte.gz").read_bytes() == (
        tmp_path / "server" / "train-labels-idx1-ubyte.gz"
    ).read_bytes()


def test_unreachable_server_gives_the_offline_error_quickly(tmp_path):
    sums = write_idx(tmp_path / "server", "toy", 12, 6, seed=2, shape=(5, 4), num_classes=2)
    spec = _served_idx_spec("toy_served", f"http://127.0.0.1:{_closed_port()}/", sums)
    start = time.perf_counter()
    with pytest.raises(MissingRawFilesError) as info:
        fetch.locate_files(spec, tmp_path / "raw", "auto", show_progress=False)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith(
        "toy_served: missing " + ", ".join(f"{stem}.gz" for stem in IDX_STEMS) + ". Place"
    )
    assert f"Place the official file(s) in {tmp_path / 'raw' / 'toy_served'}/" in message
    assert "did not answer (offline?)" in message
    assert not (tmp_path / "raw" / "toy_served").exists()  # nothing written


def test_missing_cifar_offline_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "network_available", lambda urls, timeout_s=2.5: False)
    start = time.perf_counter()
    with pytest.raises(MissingRawFilesError) as info:
        fetch.locate_files("cifar10", tmp_path, "auto")
    message = str(info.value)
    assert "cifar-10-binary.tar.gz (or cifar-10-python.tar.gz)" in message
    assert f"Place the official file(s) in {tmp_path / 'cifar10'}/" in message
    assert "official source: https://www.cs.toronto.edu/~kriz/" in message
    assert time.perf_counter() - start < 5
    with pytest.raises(MissingRawFilesError, match="download is 'never'"):
        fetch.locate_files("mnist", tmp_path, "never", system_dirs=[])


def test_network_probe_is_quick_for_unreachable_host(served, monkeypatch):
    _, base, _ = served
    port = _closed_port()
    start = time.perf_counter()
    assert not fetch.network_available(
        [f"http://127.0.0.1:{port}/x", f"https://127.0.0.1:{port}/y"], timeout_s=1.0
    )
    assert time.perf_counter() - start < 5
    assert fetch.network_available([base + "file.bin"], timeout_s=1.0)  # control: it answers
    # A name lookup that hangs (unreachable DNS server) is bounded by the timeout too.
    real_lookup = socket.getaddrinfo

    def hanging_lookup(*args, **kwargs):
        time.sleep(3)
        return real_lookup(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    start = time.perf_counter()
    assert not fetch.network_available([base + "file.bin"], timeout_s=0.3)
    assert time.perf_counter() - start < 1.5


def test_system_dirs_are_searched_after_the_project_folder(tmp_path):
    system = tmp_path / "usr_share"
    sums = write_cifar10_binary(system, 10, 10, seed=0)
    (located,) = fetch.locate_files("cifar10", tmp_path / "raw", "never", sums, [str(system)])
    assert located.path == system / "cifar-10-binary.tar.gz"
    local_sums = write_cifar10_binary(tmp_path / "raw" / "cifar10", 10, 10, seed=0)
    assert local_sums == sums  # deterministic writer: same bytes
    (located,) = fetch.locate_files("cifar10", tmp_path / "raw", "never", sums, [str(system)])
    assert located.path == tmp_path / "raw" / "cifar10" / "cifar-10-binary.tar.gz"
    assert Path(located.path).is_file()


def test_progress_bar_is_named_after_the_file(tmp_path, served, monkeypatch):
    folder, base, _ = served
    good = _sha((folder / "file.bin").read_bytes())
    shown = io.StringIO()

    # Force the bar on (tests do not run on a terminal, where it is off) and capture it.
    def visible_bar(*args, **kwargs):
        return tqdm(*args, **{**kwargs, "file": shown, "disable": False})

    monkeypatch.setattr(fetch, "tqdm", visible_bar)
    fetch.download_file([base + "file.bin"], tmp_path / "file.bin", [good], show_progress=True)
    assert "file.bin: 100%" in shown.getvalue() and "17.0k/17.0k" in shown.getvalue()
    # Negative control: show_progress=False draws nothing.
    shown.truncate(0)
    (tmp_path / "file.bin").unlink()
    fetch.download_file([base + "file.bin"], tmp_path / "file.bin", [good], show_progress=False)
    assert shown.getvalue().strip("\x00") == ""


def test_partial_files_of_killed_downloads_are_removed(tmp_path, served):
    folder, base, _ = served
    good = _sha((folder / "file.bin").read_bytes())
    raw = tmp_path / "raw"
    raw.mkdir()
    stale, live, mine = raw / "tmpab12cd_9", raw / "tmpzz34yy01", raw / "tmp_notes.txt"
    for path in (stale, live, mine):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    for path in (stale, mine):
        os.utime(path, (hour_ago, hour_ago))
    fetch.download_file([base + "file.bin"], raw / "file.bin", [good], show_progress=False)
    # Only pooch's temporary name, untouched for longer than any live download allows.
    assert sorted(p.name for p in raw.iterdir()) == ["file.bin", "tmp_notes.txt", "tmpzz34yy01"]
