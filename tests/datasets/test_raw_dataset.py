"""datasets.raw.dataset: the Kedro RawImageDataset on generated official files, the checks
against the spec, a toy dataset added with one definition, and the real Fashion-MNIST."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from kedro.io.core import DatasetError
from official_formats import (
    cifar_splits,
    idx_splits,
    write_cifar10_binary,
    write_cifar10_python,
    write_idx,
)

from linearized_kedro.core.data import binary_labels, prepare_dataset
from linearized_kedro.datasets.raw import (
    DatasetSpec,
    FileRole,
    RawFile,
    RawImageDataset,
    check_arrays,
    dataset_spec,
    register_dataset,
    unregister_dataset,
)
from linearized_kedro.datasets.raw.errors import RawDataError
from linearized_kedro.datasets.raw.formats import SPLIT_KEYS

KEYS = SPLIT_KEYS
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
def test_cifar_archives_load_exactly(tmp_path, writer):
    checksums = writer(tmp_path / "cifar10", 23, 7, seed=3)
    out = _load("cifar10", tmp_path, checksums)
    for key, ref in zip(KEYS, cifar_splits(23, 7, 3), strict=True):
        assert out[key].dtype == ref.dtype and out[key].shape == ref.shape
        np.testing.assert_array_equal(out[key], ref)
    assert out["classes"][0] == "airplane" and out["num_classes"] == 10
    assert out["image_shape"] == [32, 32, 3]
    (name,) = checksums
    assert out["files"] == {str(tmp_path / "cifar10" / name): checksums[name]}
    assert out["name"] == "cifar10" and out["max_value"] == 255


def test_cifar_binary_is_preferred_over_python(tmp_path):
    sums = {**write_cifar10_python(tmp_path / "cifar10", 10, 10, 0)}
    sums.update(write_cifar10_binary(tmp_path / "cifar10", 10, 10, 0))
    out = _load("cifar10", tmp_path, sums)
    assert list(out["files"])[0].endswith("cifar-10-binary.tar.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_load_exactly(tmp_path, gz):
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


def test_truncated_archive_with_matching_checksum_is_a_clear_error(tmp_path):
    sums = write_cifar10_binary(tmp_path / "cifar10", 10, 10, 0)
    archive = tmp_path / "cifar10" / "cifar-10-binary.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        _load("cifar10", tmp_path, sums)
    sums = {archive.name: "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()}
    with pytest.raises(DatasetError, match="not a readable .tar.gz archive"):
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


def test_missing_files_exist_is_false(tmp_path):
    dataset = RawImageDataset(dataset="mnist", root=str(tmp_path), system_dirs=[])
    assert not dataset.exists()
    write_idx(tmp_path / "mnist", "mnist", 10, 10, seed=0)
    assert not dataset.exists()  # generated files do not match the published checksums
    sums = write_idx(tmp_path / "mnist", "mnist", 10, 10, seed=0)
    assert RawImageDataset(dataset="mnist", root=str(tmp_path), checksums=sums).exists()


def test_digits_need_no_file(tmp_path):
    dataset = RawImageDataset(dataset="digits", root=str(tmp_path / "nowhere"))
    assert dataset.exists()
    out = dataset.load()
    assert out["train_images"].shape == (1437, 8, 8, 1) and out["test_images"].shape == (
        360,
        8,
        8,
        1,
    )
    assert out["max_value"] == 16 and out["files"] == {} and out["image_shape"] == [8, 8, 1]
    assert not (tmp_path / "nowhere").exists()


def test_save_is_refused():
    with pytest.raises(DatasetError, match="read-only"):
        RawImageDataset(dataset="digits").save({})


# ---------------------------------------------------------------------------
# A new dataset is one definition
# ---------------------------------------------------------------------------


@pytest.fixture
def toy_dataset(tmp_path):
    """Tiny IDX files of 7×5 images in 3 classes, and the one definition that declares them."""
    sums = write_idx(tmp_path / "files", "toy", 30, 15, seed=4, shape=(7, 5), num_classes=3)
    spec = DatasetSpec(
        name="toy",
        reader="idx",
        image_shape=(7, 5, 1),
        classes=("circle", "square", "star"),
        num_train=30,
        num_test=15,
        files=tuple(
            FileRole(role, (RawFile(f"{stem}.gz", (sums[f"{stem}.gz"],)),))
            for role, stem in zip(SPLIT_KEYS, IDX_STEMS, strict=True)
        ),
        system_dirs=(str(tmp_path / "files"),),
    )
    register_dataset(spec)
    yield spec
    unregister_dataset("toy")


def test_toy_dataset_loads_through_the_kedro_dataset_and_the_transforms(tmp_path, toy_dataset):
    raw = RawImageDataset(dataset="toy", root=str(tmp_path / "raw"), download="never").load()
    ref = idx_splits(30, 15, 4, (7, 5), 3)
    np.testing.assert_array_equal(raw["train_images"][..., 0], ref[0])
    np.testing.assert_array_equal(raw["test_labels"], ref[3])
    assert raw["classes"] == ["circle", "square", "star"] and raw["num_classes"] == 3
    spec = dataset_spec("toy")
    prepared = prepare_dataset(
        raw["train_images"],
        raw["train_labels"],
        raw["test_images"],
        raw["test_labels"],
        num_train=12,
        num_test=6,
        subset_seed=1041,
        max_value=raw["max_value"],
    )
    assert prepared.inputs.shape == (18, 7, 5, 1) and prepared.inputs.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(prepared.labels[:12], minlength=3), [4, 4, 4])
    np.testing.assert_allclose(prepared.inputs[:12].mean(), 0.0, atol=1e-5)
    # Binary task "first half of the classes vs the rest", from the spec's class count.
    two = binary_labels(prepared.labels, spec.num_classes)
    np.testing.assert_array_equal(two, (prepared.labels == 0).astype(np.int64))
    # Negative control: assuming 10 classes would call every toy class positive.
    assert binary_labels(prepared.labels, 10).all()


def test_files_that_contradict_the_spec_are_refused(tmp_path, toy_dataset):
    # Labels 0..3 (4 classes) for a 3-class spec: the check names the spec's class count.
    sums = write_idx(tmp_path / "raw" / "toy", "toy", 30, 15, seed=4, shape=(7, 5), num_classes=4)
    dataset = RawImageDataset(dataset="toy", root=str(tmp_path / "raw"), checksums=sums)
    with pytest.raises(DatasetError, match=r"labels span 0..3, expected 0..2 \(3 classes"):
        dataset.load()
    # Images of another shape.
    sums = write_idx(tmp_path / "raw" / "toy", "toy", 30, 15, seed=4, shape=(5, 7), num_classes=3)
    dataset = RawImageDataset(dataset="toy", root=str(tmp_path / "raw"), checksums=sums)
    with pytest.raises(
        DatasetError, match=r"uint8\(30, 5, 7, 1\).*declared as uint8 \(N, 7, 5, 1\)"
    ):
        dataset.load()


def test_check_arrays_pixel_range_and_label_count():
    spec = dataset_spec("digits")
    images = np.full((4, 8, 8, 1), 16, np.uint8)
    labels = np.arange(4)
    arrays = dict(train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    assert check_arrays(arrays, spec, "here")["train_labels"].dtype == np.int64
    with pytest.raises(RawDataError, match="pixels reach 17, above the spec's max_value 16"):
        check_arrays({**arrays, "test_images": images + 1}, spec, "here")
    with pytest.raises(RawDataError, match="one integer label per image"):
        check_arrays({**arrays, "train_labels": labels[:3]}, spec, "here")
    with pytest.raises(RawDataError, match="returned no test_labels"):
        check_arrays({k: v for k, v in arrays.items() if k != "test_labels"}, spec, "here")


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
