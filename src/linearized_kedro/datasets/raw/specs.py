"""Datasets described as data: one :class:`DatasetSpec` per dataset, and their registry.

A spec says everything the project knows about a dataset before reading a byte: the
format its files are stored in, the image shape, the classes, the full split sizes, the
official files with the checksums that are accepted for them and where to download
them, and the system folders where a package manager may have installed them. Adding a
dataset is one definition::

    register_dataset(DatasetSpec(
        name="kmnist", reader="idx", image_shape=(28, 28, 1), classes=(...),
        num_train=60000, num_test=10000,
        files=(FileRole("train_images", (RawFile("train-images-idx3-ubyte.gz",
                                                 ("md5:...",), ("https://.../",)),)), ...),
    ))

Specs are frozen :class:`~linearized_kedro.core.config.Config` blocks, so a spec can also
be built from a plain mapping (nested mappings become :class:`FileRole` /
:class:`RawFile`), with every field type-checked.

Parameter validation before a run needs nothing else: ``dataset_spec(name).num_train``,
``.num_test``, ``.num_classes`` and ``.image_shape`` come from here, not from the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from linearized_kedro.core.config import Config, ConfigError
from linearized_kedro.datasets.raw.checksums import parse_checksum
from linearized_kedro.datasets.raw.errors import RawDataError, UnknownDatasetError
from linearized_kedro.datasets.raw.formats import DIGITS_NUM_TRAIN, get_format

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RawFile(Config):
    """One official file.

    Attributes:
        filename: the file's name (no folder); looked for under ``<root>/<dataset>/`` and
            the spec's system folders, downloaded there under this name.
        checksums: accepted ``"md5:<hex>"`` / ``"sha256:<hex>"`` values; a file matching
            any of them is used. Empty: the file is only used with a user-given checksum
            (``RawImageDataset(checksums=...)``).
        urls: download sources, tried in order (mirrors). A download is checked against
            the first checksum (the owners' published value).
    """

    SECTION: ClassVar[str] = "raw_file"

    filename: str
    checksums: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.filename or "/" in self.filename or self.filename in (".", ".."):
            raise ConfigError(
                f"raw_file.filename must be a plain file name; got {self.filename!r}."
            )
        for value in self.checksums:
            try:
                parse_checksum(value)
            except RawDataError as exc:
                raise ConfigError(f"{self.filename}: {exc}") from exc
        if self.urls and not self.checksums:
            raise ConfigError(
                f"{self.filename} has download urls but no checksum: a download could not "
                "be verified. Add the published checksum to raw_file.checksums."
            )


@dataclass(frozen=True)
class FileRole(Config):
    """One file a format needs (e.g. ``train_images``), with interchangeable candidates.

    Attributes:
        role: the name the format reader knows the file by.
        candidates: alternative files, preferred first (e.g. ``.gz`` before an
            uncompressed copy, CIFAR-10's binary release before the python one). The first
            candidate that has urls is the one downloaded.
    """

    SECTION: ClassVar[str] = "file_role"

    role: str
    candidates: tuple[RawFile, ...]

    def validate(self) -> None:
        if not self.candidates:
            raise ConfigError(f"file role {self.role!r} needs at least one candidate file.")

    @property
    def download_candidate(self) -> RawFile | None:
        """The first candidate with download sources (``None``: place the file by hand)."""
        return next((c for c in self.candidates if c.urls), None)


@dataclass(frozen=True)
class DatasetSpec(Config):
    """Everything known about one dataset without reading it.

    Attributes:
        name: the ``data.dataset`` value; lower case, digits and ``_`` (it is a folder).
        reader: the registered format the files are stored in (``formats.format_names()``).
        image_shape: (H, W, C) of one image.
        classes: class names, index = label.
        num_train: images in the full official train split.
        num_test: images in the full official test split.
        files: the files the reader needs, one :class:`FileRole` per role; empty for a
            dataset that needs none (scikit-learn's digits).
        system_dirs: read-only folders searched after ``<root>/<dataset>/`` (e.g. where a
            Debian package installs the files).
        max_value: the largest pixel value (255; 16 for the digits), used to scale to [0, 1].
        description: one line for humans (source, licence).
    """

    SECTION: ClassVar[str] = "dataset_spec"

    name: str
    reader: str
    image_shape: tuple[int, ...]
    classes: tuple[str, ...]
    num_train: int
    num_test: int
    files: tuple[FileRole, ...] = ()
    system_dirs: tuple[str, ...] = ()
    max_value: int = 255
    description: str = ""

    def validate(self) -> None:
        where = f"dataset spec {self.name!r}"
        if not _NAME.match(self.name):
            raise ConfigError(
                f"{where}: name must be lower case letters, digits and '_' (it names a "
                "folder and a --params value)."
            )
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(
                f"{where}: image_shape must be (H, W, C) with positive sizes; got "
                f"{self.image_shape}."
            )
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"{where}: classes must list at least 2 distinct names; got {self.classes}."
            )
        if self.num_train < 1 or self.num_test < 1:
            raise ConfigError(
                f"{where}: num_train and num_test are the full split sizes and must be "
                f">= 1; got {self.num_train} and {self.num_test}."
            )
        if not 1 <= self.max_value <= 255:
            raise ConfigError(f"{where}: max_value must lie in 1..255 (uint8 pixels).")
        roles = [r.role for r in self.files]
        if len(set(roles)) != len(roles):
            raise ConfigError(f"{where}: file roles must be distinct; got {roles}.")
        names = [c.filename for r in self.files for c in r.candidates]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: a file name appears twice in files: {names}.")

    @property
    def num_classes(self) -> int:
        """Number of classes (labels are 0 .. num_classes − 1)."""
        return len(self.classes)

    @property
    def roles(self) -> tuple[str, ...]:
        """The file roles, in the order of ``files``."""
        return tuple(r.role for r in self.files)

    @property
    def needs_files(self) -> bool:
        """Whether the dataset is read from files (``False`` for bundled data)."""
        return bool(self.files)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, DatasetSpec] = {}
SPECS = MappingProxyType(_REGISTRY)  # read-only live view: name → spec


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Adds ``spec`` to the registry; its format must exist and its roles match it.

    Args:
        spec: the dataset's definition.
        replace: allow redefining an existing name.

    Returns:
        ``spec``.

    Raises:
        RawDataError: For a taken name, an unknown format, or roles that differ from
            the ones the format reads.
    """
    if not isinstance(spec, DatasetSpec):
        raise RawDataError(f"register_dataset expects a DatasetSpec; got {type(spec).__name__}.")
    if spec.name in _REGISTRY and not replace:
        raise RawDataError(
            f"A dataset named {spec.name!r} is already registered; pass replace=True to "
            "redefine it or choose another name."
        )
    fmt = get_format(spec.reader)
    if set(spec.roles) != set(fmt.roles):
        raise RawDataError(
            f"dataset spec {spec.name!r}: format {fmt.name!r} reads the file roles "
            f"{list(fmt.roles)}, but the spec declares {list(spec.roles)}."
        )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> DatasetSpec:
    """Removes ``name`` from the registry (e.g. a test's toy dataset) and returns its spec."""
    spec = dataset_spec(name)
    del _REGISTRY[name]
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name``.

    Raises:
        UnknownDatasetError: Naming the valid datasets and how to add one.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}; valid names: {', '.join(dataset_names())} (set "
            "data.dataset, e.g. --params data.dataset=digits). A new dataset is one "
            "DatasetSpec passed to linearized_kedro.datasets.raw.register_dataset()."
        )
    return _REGISTRY[name]


def dataset_names() -> tuple[str, ...]:
    """Names of the registered datasets, in registration order."""
    return tuple(_REGISTRY)


# ---------------------------------------------------------------------------
# Built-in datasets
# ---------------------------------------------------------------------------

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))

_IDX_STEMS = (
    ("train_images", "train-images-idx3-ubyte"),
    ("train_labels", "train-labels-idx1-ubyte"),
    ("test_images", "t10k-images-idx3-ubyte"),
    ("test_labels", "t10k-labels-idx1-ubyte"),
)


def idx_files(md5s: dict[str, tuple[str, ...]], bases: tuple[str, ...]) -> tuple[FileRole, ...]:
    """The four roles of an MNIST-like dataset: the ``.gz`` file, then an uncompressed copy.

    Args:
        md5s: role → accepted MD5s of the ``.gz`` file.
        bases: download folders (URLs ending in ``/``), tried in order.
    """
    roles = []
    for role, stem in _IDX_STEMS:
        gz = f"{stem}.gz"
        checksums = tuple(f"md5:{m}" for m in md5s[role])
        roles.append(
            FileRole(
                role,
                (
                    RawFile(gz, checksums, tuple(b + gz for b in bases)),
                    # Uncompressed copies have no published checksum: they need a
                    # ``checksums`` entry from the user (see RawImageDataset).
                    RawFile(stem),
                ),
            )
        )
    return tuple(roles)


_MNIST_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

# Published MD5s: CIFAR-10 from its owners' page; MNIST and Fashion-MNIST as listed in
# torchvision's dataset sources (identical to the owners'). Fashion-MNIST's second value
# per file is Debian's (package dataset-fashion-mnist 0.0~git20200523.55506a9-1,
# /var/lib/dpkg/info/dataset-fashion-mnist.md5sums): Debian recompressed the .gz files,
# so their bytes differ while the images are the same.
CIFAR10 = DatasetSpec(
    name="cifar10",
    reader="cifar10",
    image_shape=(32, 32, 3),
    classes=CIFAR10_CLASSES,
    num_train=50_000,
    num_test=10_000,
    files=(
        FileRole(
            "archive",
            (
                # The binary release first: it needs no unpickling at all.
                RawFile(
                    "cifar-10-binary.tar.gz",
                    ("md5:c32a1d4ab5d03f1284b67883e8d87530",),
                    (_CIFAR_URL + "cifar-10-binary.tar.gz",),
                ),
                RawFile(
                    "cifar-10-python.tar.gz",
                    ("md5:c58f30108f718f92721af3b95e74349a",),
                    (_CIFAR_URL + "cifar-10-python.tar.gz",),
                ),
            ),
        ),
    ),
    description="CIFAR-10 (Krizhevsky 2009): 60 000 32×32 colour images in 10 classes.",
)
MNIST = DatasetSpec(
    name="mnist",
    reader="idx",
    image_shape=(28, 28, 1),
    classes=DIGIT_CLASSES,
    num_train=60_000,
    num_test=10_000,
    files=idx_files(
        {
            "train_images": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
            "train_labels": ("d53e105ee54ea40749a09fcbcd1e9432",),
            "test_images": ("9fb629c4189551a2d022fa330f9573f3",),
            "test_labels": ("ec29112dd5afa0611ce80d1b7f02629c",),
        },
        _MNIST_BASES,
    ),
    description="MNIST (LeCun et al. 1998): 70 000 28×28 grey handwritten digits.",
)
FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    reader="idx",
    image_shape=(28, 28, 1),
    classes=FASHION_MNIST_CLASSES,
    num_train=60_000,
    num_test=10_000,
    files=idx_files(
        {
            "train_images": (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "cf8536b0aa1a6ac5fa3f23001093305c",
            ),
            "train_labels": (
                "25c81989df183df01b3e8a0aad5dffbe",
                "10bea18fdb374794d4bb42e356e600c9",
            ),
            "test_images": (
                "bef4ecab320f06d8554ea6380940ec79",
                "f78720b4224f21cce2f2ccf2d7a94c9a",
            ),
            "test_labels": (
                "bb300cfdad3c16e7a12a480ee83cd310",
                "0d30e22e447f3c33dab9ed536400ac01",
            ),
        },
        _FASHION_BASES,
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    description="Fashion-MNIST (Xiao et al. 2017): 70 000 28×28 grey clothing images.",
)
DIGITS = DatasetSpec(
    name="digits",
    reader="sklearn_digits",
    image_shape=(8, 8, 1),
    classes=DIGIT_CLASSES,
    # docs/methods.md §2.3: the first 1 437 digits are the train split, the last 360 the test split.
    num_train=DIGITS_NUM_TRAIN,
    num_test=360,
    max_value=16,
    description="scikit-learn's 1 797 real 8×8 digits (bundled: works offline).",
)

for _spec in (CIFAR10, MNIST, FASHION_MNIST, DIGITS):
    register_dataset(_spec)
del _spec

# The built-in names (a constant); dataset_names() also lists datasets registered later.
DATASET_NAMES = dataset_names()
