"""Official image-classification files: described as data, verified, offline-friendly.

docs/methods.md §1.1 "Offline operation": the project reads the datasets from local files in their
official formats, checks every file against the checksum its owners publish before
using it, and downloads a file itself only when it is missing and the network answers.

One module per mechanism:

* :mod:`.specs`: what a dataset is (:class:`DatasetSpec`), the registry
  (:func:`register_dataset`, :func:`dataset_spec`) and the built-in datasets.
* :mod:`.checksums`: accepted checksums and file verification.
* :mod:`.formats`: readers of the file formats (CIFAR-10 archives, IDX, bundled digits).
* :mod:`.fetch`: finding files on disk and downloading them (pooch).
* :mod:`.dataset`: the loader and the Kedro :class:`RawImageDataset`.
* :mod:`.errors`: errors that name the problem and the fix.
"""

from linearized_kedro.datasets.raw.checksums import (
    file_digest,
    normalize_checksum,
    parse_checksum,
    verify_file,
)
from linearized_kedro.datasets.raw.dataset import (
    RawImageDataset,
    check_arrays,
    load_raw_dataset,
    read_located,
)
from linearized_kedro.datasets.raw.errors import (
    ChecksumMismatchError,
    DownloadError,
    MissingRawFilesError,
    NoSpaceError,
    RawDataError,
    UnknownDatasetError,
)
from linearized_kedro.datasets.raw.fetch import (
    DOWNLOAD_MODES,
    LocatedFile,
    download_file,
    locate_files,
    network_available,
    remove_stale_partials,
)
from linearized_kedro.datasets.raw.formats import (
    DIGITS_NUM_TRAIN,
    Format,
    format_names,
    get_format,
    read_cifar10_archive,
    read_cifar10_binary,
    read_cifar10_python,
    read_digits,
    read_idx,
    read_idx_dataset,
    register_format,
)
from linearized_kedro.datasets.raw.specs import (
    CIFAR10_CLASSES,
    DATASET_NAMES,
    DIGIT_CLASSES,
    FASHION_MNIST_CLASSES,
    SPECS,
    DatasetSpec,
    FileRole,
    RawFile,
    dataset_names,
    dataset_spec,
    register_dataset,
    unregister_dataset,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DIGITS_NUM_TRAIN",
    "DIGIT_CLASSES",
    "DOWNLOAD_MODES",
    "FASHION_MNIST_CLASSES",
    "SPECS",
    "ChecksumMismatchError",
    "DatasetSpec",
    "DownloadError",
    "FileRole",
    "Format",
    "LocatedFile",
    "MissingRawFilesError",
    "NoSpaceError",
    "RawDataError",
    "RawFile",
    "RawImageDataset",
    "UnknownDatasetError",
    "check_arrays",
    "dataset_names",
    "dataset_spec",
    "download_file",
    "file_digest",
    "format_names",
    "get_format",
    "load_raw_dataset",
    "locate_files",
    "network_available",
    "normalize_checksum",
    "parse_checksum",
    "read_cifar10_archive",
    "read_cifar10_binary",
    "read_cifar10_python",
    "read_digits",
    "read_idx",
    "read_idx_dataset",
    "read_located",
    "register_dataset",
    "register_format",
    "remove_stale_partials",
    "unregister_dataset",
    "verify_file",
]
