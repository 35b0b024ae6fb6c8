"""The read-only Kedro dataset of official image files, and the loader behind it.

``load_raw_dataset`` = locate and verify the files (``fetch``), read them with the spec's
format (``formats``), and check the arrays against the spec (shape, classes, pixel range).
``digits`` (scikit-learn's 1 797 real 8×8 images) needs no file and is the offline demo.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError

from linearized_kedro.datasets.raw.checksums import parse_checksum
from linearized_kedro.datasets.raw.errors import RawDataError
from linearized_kedro.datasets.raw.fetch import (
    LocatedFile,
    check_download_mode,
    locate_files,
    resolve_spec,
)
from linearized_kedro.datasets.raw.formats import SPLIT_KEYS, get_format
from linearized_kedro.datasets.raw.specs import DatasetSpec

logger = logging.getLogger(__name__)


def read_located(dataset: str | DatasetSpec, files: Sequence[LocatedFile]) -> dict[str, np.ndarray]:
    """Reads verified files (from :func:`locate_files`) with the spec's format.

    Returns:
        ``train_images`` uint8 (N, H, W, C), ``train_labels`` int64 (N,), ``test_images``,
        ``test_labels``, checked against the spec (:func:`check_arrays`).
    """
    spec = resolve_spec(dataset)
    arrays = get_format(spec.reader).read({f.role: f.path for f in files}, spec)
    where = ", ".join(str(f.path) for f in files) or spec.reader
    return check_arrays(arrays, spec, where)


def check_arrays(
    arrays: Mapping[str, np.ndarray], spec: DatasetSpec, where: str
) -> dict[str, np.ndarray]:
    """The four split arrays, checked against ``spec`` (uint8 pixels, shape, label range).

    Args:
        arrays: a format reader's output.
        spec: the dataset's definition.
        where: the files read, for messages.

    Raises:
        RawDataError: Naming the array, what the spec expects and what was found.
    """
    missing = [k for k in SPLIT_KEYS if k not in arrays]
    if missing:
        raise RawDataError(f"{where}: format {spec.reader!r} returned no {', '.join(missing)}.")
    out = {}
    for split in ("train", "test"):
        images = np.asarray(arrays[f"{split}_images"])
        labels = np.asarray(arrays[f"{split}_labels"])
        if images.dtype != np.uint8 or images.shape[1:] != tuple(spec.image_shape):
            raise RawDataError(
                f"{where}: {split} images are {images.dtype}{images.shape}, but dataset "
                f"{spec.name!r} is declared as uint8 (N, {', '.join(map(str, spec.image_shape))})"
                " (DatasetSpec.image_shape)."
            )
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise RawDataError(
                f"{where}: {labels.dtype}{labels.shape} {split} labels for "
                f"{images.shape[0]} images; expected one integer label per image."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise RawDataError(
                f"{where}: {split} labels span {labels.min()}..{labels.max()}, expected "
                f"0..{spec.num_classes - 1} ({spec.num_classes} classes in the spec of "
                f"{spec.name!r})."
            )
        if images.size and images.max() > spec.max_value:
            raise RawDataError(
                f"{where}: {split} pixels reach {images.max()}, above the spec's max_value "
                f"{spec.max_value} for {spec.name!r}."
            )
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = labels.astype(np.int64)
    return out


def load_raw_dataset(dataset: str | DatasetSpec, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Locates, verifies and reads one dataset.

    Args:
        dataset: A registered dataset name (or its :class:`DatasetSpec`).
        *args, **kwargs: where to look and whether to download: ``root``, ``download``,
            ``checksums``, ``system_dirs``, ``show_progress`` of :func:`locate_files`.

    Returns:
        ``{"name", "train_images" uint8 (N, H, W, C), "train_labels" int64 (N,),
        "test_images", "test_labels", "classes" list[str], "num_classes",
        "image_shape" [H, W, C], "max_value" (255, or 16 for digits),
        "files" {path: checksum}}``.
    """
    spec = resolve_spec(dataset)
    located = locate_files(spec, *args, **kwargs)
    arrays = read_located(spec, located)
    if (len(arrays["train_labels"]), len(arrays["test_labels"])) != (spec.num_train, spec.num_test):
        logger.info(
            "%s: the files hold %d + %d images; the full official splits are %d + %d.",
            spec.name,
            len(arrays["train_labels"]),
            len(arrays["test_labels"]),
            spec.num_train,
            spec.num_test,
        )
    logger.info(
        "Loaded %s: %d train + %d test images of shape %s",
        spec.name,
        len(arrays["train_labels"]),
        len(arrays["test_labels"]),
        arrays["train_images"].shape[1:],
    )
    return {
        "name": spec.name,
        **arrays,
        "classes": list(spec.classes),
        "num_classes": spec.num_classes,
        "image_shape": list(spec.image_shape),
        "max_value": spec.max_value,
        "files": {str(f.path): f.checksum for f in located},
    }


class RawImageDataset(AbstractDataset[None, dict]):
    """Read-only Kedro dataset for the official files of a registered image dataset.

    Example catalog entry::

        raw_images:
          type: linearized_kedro.datasets.RawImageDataset
          dataset: ${runtime_params:data.dataset, ${globals:defaults.dataset}}
          root: data/01_raw
    """

    def __init__(
        self,
        *,
        dataset: str,
        root: str = "data/01_raw",
        download: str = "auto",
        checksums: dict[str, str] | None = None,
        system_dirs: list[str] | None = None,
        show_progress: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates the dataset; bad names and options fail here, before any run starts.

        Args:
            dataset: A registered dataset name (``dataset_names()``).
            root: Raw-data root; files live in ``<root>/<dataset>/``.
            download: ``auto`` | ``always`` | ``never``.
            checksums: ``{filename: "md5:..."|"sha256:..."}`` overriding the published ones.
            system_dirs: Extra read-only locations (default: the dataset's known ones).
            show_progress: Show a download progress bar (on a terminal only).
            metadata: Free-form (``kedro-viz: {layer: raw}``); ignored by Kedro.
        """
        try:
            self._spec = resolve_spec(dataset)
            check_download_mode(download)
            for value in (checksums or {}).values():
                parse_checksum(value)
        except ValueError as exc:  # RawDataError and ConfigError both derive from it
            raise DatasetError(str(exc)) from exc
        self._dataset = dataset
        self._root = str(root)
        self._download = download
        self._checksums = dict(checksums or {})
        self._system_dirs = None if system_dirs is None else list(system_dirs)
        self._show_progress = bool(show_progress)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "dataset": self._dataset,
            "root": self._root,
            "download": self._download,
            "checksums": self._checksums or None,
        }

    def load(self) -> dict[str, Any]:
        """Locates, verifies and reads the files; see :func:`load_raw_dataset`."""
        try:
            return load_raw_dataset(
                self._spec,
                self._root,
                self._download,
                self._checksums,
                self._system_dirs,
                self._show_progress,
            )
        except ValueError as exc:  # RawDataError and ConfigError both derive from it
            raise DatasetError(str(exc)) from exc

    def save(self, data: Any) -> None:
        """Raw data is read-only."""
        raise DatasetError(
            "RawImageDataset is read-only: place the official files in "
            f"{self._root}/{self._dataset}/ instead of saving."
        )

    def _exists(self) -> bool:
        try:
            locate_files(self._spec, self._root, "never", self._checksums, self._system_dirs)
        except ValueError:
            return False
        return True
