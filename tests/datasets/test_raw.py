"""Raw readers: official formats (generated), checksums, bad files, offline errors, real Fashion-MNIST."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from kedro.io.core import DatasetError
from official_formats import (
    cifar_splits,
    idx_bytes,
    idx_splits,
    write_cifar10_binary,
    write_cifar10_python,
    write_idx,
)

from linearized_kedro.datasets import raw
from linearized_kedro.datasets.raw import RawImageDataset, parse_checksum, read_idx

KEYS = ("train_images", "train_labels", "test_images", "test_labels")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _load(dataset, root, checksums=None, **kwargs):
    return RawImageDataset(
        dataset=dataset,
        root=str(root),
        download="never",
        checksums=checksums,
        system_dirs=[],
        **kwargs,
    ).load()


@pytest.mark.parametrize("writer", [write_cifar10_binary, write_cifar10_python])
def test_cifar_archives_read_exactly(tmp_path, writer):
    checksums = writer(tmp_path / "cifar10", 23, 7, seed=3)
    out = _load("cifar10", tmp_path, checksums)
    for key, ref in zip(KEYS, cifar_splits(23, 7, 3), strict=True):
        assert out[key].dtype == ref.dtype and out[key].shape == ref.shape
        np.testing.assert_array_equal(out[key], ref)
    assert out["train_images"].shape[1:] == (32, 32, 3)
    assert out["train_labels"].dtype == np.int64
    assert out["classes"][0] == "airplane" and len(out["classes"]) == 10
    (name,) = checksums
    assert out["files"] == {str(tmp_path / "cifar10" / name): checksums[name]}
    assert out["name"] == "cifar10" and out["max_value"] == 255


def test_cifar_binary_is_preferred_over_python(tmp_path):
    sums = {**write_cifar10_python(tmp_path / "cifar10", 10, 10, 0)}
    sums.update(write_cifar10_binary(tmp_path / "cifar10", 10, 10, 0))
    out = _load("cifar10", tmp_path, sums)
    assert list(out["files"])[0].endswith("cifar-10-binary.tar.gz")


def test_cifar_channel_layout_is_hwc(tmp_path):
    # The first pixel bytes of a record are the red plane: image[0, 0, 0, 0], image[0, 0, 1, 0], ...
    write_cifar10_binary(tmp_path / "cifar10", 10, 10, seed=1)
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-binary.tar.gz") as tar:
        member = tar.extractfile("cifar-10-batches-bin/data_batch_1.bin").read()
    out = raw.read_cifar10_binary(tmp_path / "cifar10" / "cifar-10-binary.tar.gz")
    red_row0 = np.frombuffer(member[1 : 1 + 32], np.uint8)
    green0 = member[1 + 1024]
    np.testing.assert_array_equal(out["train_images"][0, 0, :, 0], red_row0)
    assert out["train_images"][0, 0, 0, 1] == green0
    assert out["train_labels"][0] == member[0]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_exactly(tmp_path, gz):
    checksums = write_idx(tmp_path / "mnist", "mnist", 30, 12, seed=5, gz=gz)
    out = _load("mnist", tmp_path, checksums)
    for key, ref in zip(KEYS, idx_splits(30, 12, 5), strict=True):
        ref = ref[..., None] if key.endswith("images") else ref
        np.testing.assert_array_equal(out[key], ref)
    assert out["train_images"].shape == (30, 28, 28, 1)


def test_uncompressed_idx_without_checksum_is_refused(tmp_path):
    write_idx(tmp_path / "mnist", "mnist", 10, 10, seed=0, gz=False)
    with pytest.raises(DatasetError, match="No published checksum"):
        _load("mnist", tmp_path)


def test_generated_files_fail_the_published_checksum(tmp_path):
    write_idx(tmp_path / "fashion_mnist", "fashion_mnist", 10, 10, seed=0)
    with pytest.raises(DatasetError, match=r"Checksum mismatch .*train-images.*8d4fb7e6"):
        _load("fashion_mnist", tmp_path)


def test_checksum_override_mismatch_names_the_file(tmp_path):
    sums = write_cifar10_binary(tmp_path / "cifar10", 10, 10, 0)
    wrong = {name: "sha256:" + "0" * 64 for name in sums}
    with pytest.raises(DatasetError, match="Checksum mismatch for .*cifar-10-binary.tar.gz"):
        _load("cifar10", tmp_path, wrong)


def test_md5_override_accepted(tmp_path):
    write_idx(tmp_path / "mnist", "mnist", 10, 10, seed=0)
    sums = {
        p.name: "md5:" + hashlib.md5(p.read_bytes()).hexdigest()
        for p in (tmp_path / "mnist").iterdir()
    }
    assert _load("mnist", tmp_path, sums)["files"][
        str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    ].startswith("md5:")


def test_truncated_idx_reports_expected_and_actual_size(tmp_path):
    payload = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload[:-100])
    with pytest.raises(
        ValueError,
        match=rf"{path.name} is truncated.*need {len(payload)} bytes, found {len(payload) - 100}",
    ):
        read_idx(path, 3)
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(payload)[:-30])
    with pytest.raises(ValueError, match="t.gz is truncated or not gzip"):
        read_idx(gz, 3)


def test_truncated_idx_through_dataset(tmp_path):
    write_idx(tmp_path / "mnist", "mnist", 10, 10, seed=0)
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.arange(10) % 10)[:-3], mtime=0))
    sums = {
        p.name: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        for p in labels.parent.iterdir()
    }
    with pytest.raises(
        DatasetError, match=r"train-labels-idx1-ubyte.gz is truncated.*need 18 bytes, found 15"
    ):
        _load("mnist", tmp_path, sums)


def test_idx_magic_checked(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + np.asarray([2], ">u4").tobytes() + b"\0" * 8)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file: magic number 0x00000d01"):
        read_idx(path, 1)
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="expected 3"):
        read_idx(path, 3)


def test_corrupted_tar(tmp_path):
    sums = write_cifar10_binary(tmp_path / "cifar10", 10, 10, 0)
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        _load("cifar10", tmp_path, sums)
    # Even with a matching checksum, a broken archive gives a clear error.
    sums = {archive.name: "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()}
    with pytest.raises(DatasetError, match="not a readable .tar.gz archive"):
        _load("cifar10", tmp_path, sums)


def test_python_batches_refuse_foreign_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    members = {
        f"cifar-10-batches-py/data_batch_{i}": pickle.dumps({b"data": Evil()}) for i in range(1, 6)
    }
    members["cifar-10-batches-py/test_batch"] = members["cifar-10-batches-py/data_batch_1"]
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    sums = {archive.name: "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()}
    with pytest.raises(DatasetError, match="Refusing to load builtins.print"):
        _load("cifar10", tmp_path, sums)


def test_unknown_dataset_and_bad_options_fail_at_construction():
    with pytest.raises(
        DatasetError,
        match="Unknown dataset 'cifar100'; valid names: cifar10, mnist, fashion_mnist, digits",
    ):
        RawImageDataset(dataset="cifar100")
    with pytest.raises(DatasetError, match="download='sometimes'"):
        RawImageDataset(dataset="mnist", download="sometimes")
    with pytest.raises(DatasetError, match="not understood"):
        RawImageDataset(dataset="mnist", checksums={"a": "crc32:1234"})
    assert parse_checksum("A" * 32) == ("md5", "a" * 32)


def test_missing_files_offline_fail_fast_with_placement(tmp_path, monkeypatch):
    monkeypatch.setattr(raw, "network_available", lambda urls, timeout_s=2.5: False)
    start = time.perf_counter()
    with pytest.raises(
        DatasetError, match=r"place the official file\(s\) in .*cifar10/".replace("place", "Place")
    ) as info:
        RawImageDataset(dataset="cifar10", root=str(tmp_path), download="auto").load()
    assert "cifar-10-binary.tar.gz (or cifar-10-python.tar.gz)" in str(info.value)
    assert "did not answer" in str(info.value)
    assert time.perf_counter() - start < 5
    with pytest.raises(DatasetError, match="download is 'never'"):
        _load("mnist", tmp_path)
    assert not RawImageDataset(dataset="mnist", root=str(tmp_path), system_dirs=[]).exists()


def test_network_probe_is_quick_for_unreachable_host():
    start = time.perf_counter()
    assert not raw.network_available(
        ["http://127.0.0.1:9/x", "https://127.0.0.1:9/y"], timeout_s=1.0
    )
    assert time.perf_counter() - start < 5


def test_download_is_verified_before_it_appears(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    target = tmp_path / "out" / "file.bin"
    with pytest.raises(ValueError, match="Could not download file.bin"):
        raw.download_file([source.as_uri()], target, ["sha256:" + "1" * 64], show_progress=False)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert raw.download_file([source.as_uri()], target, [good], show_progress=False) == good
    assert target.read_bytes() == b"payload"


def test_digits_split_and_range():
    out = RawImageDataset(dataset="digits").load()
    assert out["train_images"].shape == (1437, 8, 8, 1) and out["test_images"].shape == (
        360,
        8,
        8,
        1,
    )
    assert out["train_images"].dtype == np.uint8 and out["train_images"].max() == 16
    assert out["max_value"] == 16 and out["files"] == {}
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(out["test_labels"], load_digits().target[1437:])


def test_save_is_refused():
    with pytest.raises(DatasetError, match="read-only"):
        RawImageDataset(dataset="digits").save({})


@pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian(tmp_path):
    out = RawImageDataset(dataset="fashion_mnist", root=str(tmp_path), download="never").load()
    assert out["train_images"].shape == (60000, 28, 28, 1)
    assert out["test_images"].shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(out["train_labels"]), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(out["test_labels"]), np.full(10, 1000))
    assert all(path.startswith(str(DEBIAN_FASHION)) for path in out["files"])
    assert all(value.startswith("md5:") for value in out["files"].values())
    mean = out["train_images"].mean() / 255.0
    assert 0.27 < mean < 0.30  # Fashion-MNIST's well-known pixel mean ≈ 0.286
