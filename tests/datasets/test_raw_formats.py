"""datasets.raw.formats: the official formats read exactly (generated files), bad files refused."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
from official_formats import (
    cifar_splits,
    idx_bytes,
    idx_splits,
    write_cifar10_binary,
    write_cifar10_python,
    write_idx,
)

from linearized_kedro.datasets.raw import formats
from linearized_kedro.datasets.raw.errors import RawDataError

KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (write_cifar10_binary, formats.read_cifar10_binary),
        (write_cifar10_python, formats.read_cifar10_python),
        (write_cifar10_binary, formats.read_cifar10_archive),
        (write_cifar10_python, formats.read_cifar10_archive),
    ],
)
def test_cifar_archives_read_exactly(tmp_path, writer, reader):
    (name,) = writer(tmp_path, 23, 7, seed=3)
    out = reader(tmp_path / name)
    for key, ref in zip(KEYS, cifar_splits(23, 7, 3), strict=True):
        assert out[key].dtype == ref.dtype and out[key].shape == ref.shape
        np.testing.assert_array_equal(out[key], ref)
    # Negative control: another seed's content differs, so the equality above can fail.
    assert not np.array_equal(out["train_images"], cifar_splits(23, 7, 4)[0])


def test_cifar_channel_layout_is_hwc(tmp_path):
    # The first pixel bytes of a record are the red plane: image[0, 0, 0, 0], image[0, 0, 1, 0], ...
    write_cifar10_binary(tmp_path, 10, 10, seed=1)
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz") as tar:
        member = tar.extractfile("cifar-10-batches-bin/data_batch_1.bin").read()
    out = formats.read_cifar10_binary(tmp_path / "cifar-10-binary.tar.gz")
    red_row0 = np.frombuffer(member[1 : 1 + 32], np.uint8)
    green0 = member[1 + 1024]
    np.testing.assert_array_equal(out["train_images"][0, 0, :, 0], red_row0)
    assert out["train_images"][0, 0, 0, 1] == green0
    assert out["train_labels"][0] == member[0]


def test_corrupted_tar_is_a_clear_error(tmp_path):
    write_cifar10_binary(tmp_path, 10, 10, 0)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(RawDataError, match="not a readable .tar.gz archive"):
        formats.read_cifar10_archive(archive)


def test_archive_without_cifar_members_is_refused(tmp_path):
    archive = tmp_path / "other.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(RawDataError, match="neither data_batch_"):
        formats.read_cifar10_archive(archive)
    with pytest.raises(RawDataError, match="lacks the member"):
        formats.read_cifar10_binary(archive)


def test_python_batches_refuse_foreign_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    members = {
        f"cifar-10-batches-py/data_batch_{i}": pickle.dumps({b"data": Evil()}) for i in range(1, 6)
    }
    members["cifar-10-batches-py/test_batch"] = members["cifar-10-batches-py/data_batch_1"]
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(RawDataError, match="Refusing to load builtins.print"):
        formats.read_cifar10_archive(archive)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_exactly(tmp_path, gz):
    write_idx(tmp_path, "mnist", 30, 12, seed=5, gz=gz)
    suffix = ".gz" if gz else ""
    paths = {
        role: tmp_path / f"{stem}{suffix}"
        for role, stem in zip(
            KEYS,
            [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ],
            strict=True,
        )
    }
    out = formats.read_idx_dataset(paths)
    for key, ref in zip(KEYS, idx_splits(30, 12, 5), strict=True):
        ref = ref[..., None] if key.endswith("images") else ref
        np.testing.assert_array_equal(out[key], ref)
    assert out["train_images"].shape == (30, 28, 28, 1) and out["train_labels"].dtype == np.int64
    # Negative control: swapping image and label files is detected by the IDX header.
    swapped = {**paths, "train_images": paths["train_labels"]}
    with pytest.raises(RawDataError, match="Are image and label files swapped"):
        formats.read_idx_dataset(swapped)


def test_truncated_idx_reports_expected_and_actual_size(tmp_path):
    payload = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload[:-100])
    with pytest.raises(
        RawDataError,
        match=rf"{path.name} is truncated.*need {len(payload)} bytes, found {len(payload) - 100}",
    ):
        formats.read_idx(path, 3)
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(payload)[:-30])
    with pytest.raises(RawDataError, match="t.gz is truncated or not gzip"):
        formats.read_idx(gz, 3)
    path.write_bytes(payload)  # control: the whole file reads
    assert formats.read_idx(path, 3).shape == (5, 28, 28)


def test_idx_magic_checked(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + np.asarray([2], ">u4").tobytes() + b"\0" * 8)
    with pytest.raises(
        RawDataError, match="not an unsigned-byte IDX file: magic number 0x00000d01"
    ):
        formats.read_idx(path, 1)
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(RawDataError, match="expected 3"):
        formats.read_idx(path, 3)


def test_digits_split_in_file_order():
    from sklearn.datasets import load_digits

    out = formats.read_digits()
    assert out["train_images"].shape == (1437, 8, 8, 1)
    assert out["test_images"].shape == (360, 8, 8, 1)
    assert out["train_images"].dtype == np.uint8 and out["train_images"].max() == 16
    np.testing.assert_array_equal(out["test_labels"], load_digits().target[1437:])


def test_format_registry_names_the_valid_formats():
    assert {"cifar10", "idx", "sklearn_digits"} <= set(formats.format_names())
    assert formats.get_format("idx").roles == formats.SPLIT_KEYS
    with pytest.raises(RawDataError, match=r"Unknown raw file format 'png'.*cifar10, idx"):
        formats.get_format("png")
    with pytest.raises(RawDataError, match="already registered; pass replace=True"):
        formats.register_format(formats.Format("idx", lambda paths, spec: {}, ()))
