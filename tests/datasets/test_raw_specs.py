"""datasets.raw.specs: datasets described as data, the registry, and what validation reads."""

from __future__ import annotations

import pytest

from linearized_kedro.core.config import ConfigError
from linearized_kedro.datasets.raw import formats, specs
from linearized_kedro.datasets.raw.errors import RawDataError, UnknownDatasetError
from linearized_kedro.datasets.raw.specs import (
    DatasetSpec,
    FileRole,
    RawFile,
    dataset_names,
    dataset_spec,
    register_dataset,
    unregister_dataset,
)


def _toy(**changes) -> DatasetSpec:
    fields = dict(
        name="toy_spec",
        reader="idx",
        image_shape=(6, 6, 1),
        classes=("a", "b", "c"),
        num_train=30,
        num_test=9,
        files=tuple(FileRole(role, (RawFile(f"{role}.gz"),)) for role in formats.SPLIT_KEYS),
    )
    fields.update(changes)
    return DatasetSpec(**fields)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "sizes", "max_value"),
    [
        ("cifar10", (32, 32, 3), 10, (50_000, 10_000), 255),
        ("mnist", (28, 28, 1), 10, (60_000, 10_000), 255),
        ("fashion_mnist", (28, 28, 1), 10, (60_000, 10_000), 255),
        ("digits", (8, 8, 1), 10, (1437, 360), 16),
    ],
)
def test_builtin_specs_answer_validation_without_files(name, shape, classes, sizes, max_value):
    spec = dataset_spec(name)
    assert spec.image_shape == shape and spec.num_classes == classes
    assert (spec.num_train, spec.num_test) == sizes and spec.max_value == max_value


def test_builtin_files_keep_the_accepted_checksums():
    fashion = {r.role: r for r in dataset_spec("fashion_mnist").files}
    gz = fashion["train_images"].candidates[0]
    # The owners' MD5 first (what downloads are checked against), Debian's repack second.
    assert gz.checksums == (
        "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "md5:cf8536b0aa1a6ac5fa3f23001093305c",
    )
    assert gz.urls[0].endswith("/train-images-idx3-ubyte.gz")
    assert dataset_spec("fashion_mnist").system_dirs == ("/usr/share/datasets/fashion-mnist",)
    (archive,) = dataset_spec("cifar10").files
    assert [c.filename for c in archive.candidates] == [
        "cifar-10-binary.tar.gz",
        "cifar-10-python.tar.gz",
    ]
    assert archive.download_candidate.filename == "cifar-10-binary.tar.gz"
    assert not dataset_spec("digits").needs_files
    assert specs.DATASET_NAMES == ("cifar10", "mnist", "fashion_mnist", "digits")


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(
        UnknownDatasetError,
        match=r"Unknown dataset 'cifar100'; valid names: cifar10, mnist, fashion_mnist, digits "
        r"\(set data.dataset.*register_dataset",
    ):
        dataset_spec("cifar100")
    assert dataset_spec("mnist").name == "mnist"  # control: a valid name answers


def test_register_and_unregister_one_definition():
    spec = _toy()
    assert "toy_spec" not in dataset_names()
    register_dataset(spec)
    try:
        assert dataset_spec("toy_spec") is spec and dataset_names()[-1] == "toy_spec"
        assert specs.SPECS["toy_spec"] is spec
        with pytest.raises(RawDataError, match="already registered"):
            register_dataset(spec)
        assert register_dataset(spec.replace(num_train=31), replace=True).num_train == 31
    finally:
        unregister_dataset("toy_spec")
    with pytest.raises(UnknownDatasetError):
        dataset_spec("toy_spec")
    assert specs.DATASET_NAMES == ("cifar10", "mnist", "fashion_mnist", "digits")


def test_registration_checks_the_format_and_its_roles():
    with pytest.raises(RawDataError, match="Unknown raw file format 'png'"):
        register_dataset(_toy(reader="png"))
    with pytest.raises(RawDataError, match=r"format 'idx' reads the file roles .*\['archive'\]"):
        register_dataset(_toy(files=(FileRole("archive", (RawFile("a.tar.gz"),)),)))
    assert "toy_spec" not in dataset_names()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Toy-1"}, "lower case"),
        ({"image_shape": (6, 6)}, r"\(H, W, C\)"),
        ({"classes": ("a",)}, "at least 2 distinct"),
        ({"classes": ("a", "a")}, "at least 2 distinct"),
        ({"num_test": 0}, "full split sizes"),
        ({"max_value": 300}, "1..255"),
        ({"num_train": "30"}, "dataset_spec.num_train must be an integer"),
    ],
)
def test_spec_fields_are_checked(changes, message):
    with pytest.raises(ConfigError, match=message):
        _toy(**changes)


def test_file_fields_are_checked():
    with pytest.raises(ConfigError, match="plain file name"):
        RawFile("dir/file.gz")
    with pytest.raises(ConfigError, match="not understood"):
        RawFile("a.gz", ("crc:1",))
    with pytest.raises(ConfigError, match="download urls but no checksum"):
        RawFile("a.gz", (), ("http://example.org/a.gz",))
    with pytest.raises(ConfigError, match="at least one candidate"):
        FileRole("archive", ())
    with pytest.raises(ConfigError, match="file roles must be distinct"):
        _toy(files=(FileRole("x", (RawFile("a"),)), FileRole("x", (RawFile("b"),))))
    with pytest.raises(ConfigError, match="appears twice"):
        _toy(files=(FileRole("x", (RawFile("a"),)), FileRole("y", (RawFile("a"),))))


def test_spec_from_plain_mapping():
    """A spec written as data (e.g. YAML) converts nested mappings into files and roles."""
    spec = DatasetSpec(
        name="toy_mapping",
        reader="cifar10",
        image_shape=[32, 32, 3],
        classes=["x", "y"],
        num_train=10,
        num_test=10,
        files=[
            {
                "role": "archive",
                "candidates": [
                    {
                        "filename": "a.tar.gz",
                        "checksums": ["md5:" + "1" * 32],
                        "urls": ["http://h/a"],
                    }
                ],
            }
        ],
    )
    assert spec.files[0].candidates[0] == RawFile("a.tar.gz", ("md5:" + "1" * 32,), ("http://h/a",))
    assert spec.image_shape == (32, 32, 3) and spec.roles == ("archive",)
