"""Readers of the official file formats, and a registry of them by name.

A *format* turns verified files (by role) into the four split arrays; a dataset spec
names the format it is stored in (``DatasetSpec.reader``). Built-in formats:

* ``cifar10``: one ``.tar.gz`` archive, either the binary release (records of one label
  byte + 3 072 channel-major pixel bytes) or the python release (pickled batches, read
  with an unpickler that can build NumPy arrays and nothing else); told apart by the
  archive's member names.
* ``idx``: the four IDX files of MNIST-like datasets (``.gz`` or uncompressed).
* ``sklearn_digits``: scikit-learn's bundled 8×8 digits; no file at all.

Every reader returns ``train_images`` uint8 (N, H, W, C), ``train_labels`` int64 (N,),
``test_images``, ``test_labels``, in file order. Shapes, label ranges and pixel ranges
are checked against the spec by the caller (``dataset.check_arrays``).
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linearized_kedro.datasets.raw.errors import RawDataError

SPLIT_KEYS = ("train_images", "train_labels", "test_images", "test_labels")

# One CIFAR-10 binary record: 1 label byte + 3×32×32 pixel bytes (channel-major).
_CIFAR_SHAPE_CHW = (3, 32, 32)
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS
_CIFAR_TRAIN_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_MEMBER = "test_batch"
_CIFAR_BINARY_MEMBERS = tuple(f"{m}.bin" for m in (*_CIFAR_TRAIN_MEMBERS, _CIFAR_TEST_MEMBER))
_CIFAR_PYTHON_MEMBERS = (*_CIFAR_TRAIN_MEMBERS, _CIFAR_TEST_MEMBER)

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_IDX_UBYTE = 0x08
_IDX_IMAGES_NDIM = 3
_IDX_LABELS_NDIM = 1

# docs/methods.md §2.3: the first 1 437 digits are the train split, the last 360 the test split.
DIGITS_NUM_TRAIN = 1437

Reader = Callable[[Mapping[str, Path], Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Format:
    """A registered file format.

    Attributes:
        name: what ``DatasetSpec.reader`` names.
        read: ``read(paths, spec) -> {train_images, train_labels, test_images,
            test_labels}``; ``paths`` maps each role to a verified file, ``spec`` is the
            dataset's :class:`~linearized_kedro.datasets.raw.specs.DatasetSpec`.
        roles: the file roles the reader needs (a spec must declare exactly these).
    """

    name: str
    read: Reader
    roles: tuple[str, ...]


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format, *, replace: bool = False) -> Format:
    """Adds a format to the registry (``replace=True`` to redefine an existing name)."""
    if fmt.name in _FORMATS and not replace:
        raise RawDataError(
            f"A format named {fmt.name!r} is already registered; pass replace=True to "
            "redefine it or choose another name."
        )
    _FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    """The registered format ``name``; the error lists the valid names."""
    if name not in _FORMATS:
        raise RawDataError(
            f"Unknown raw file format {name!r}; registered formats: "
            f"{', '.join(sorted(_FORMATS))}. Register a reader with register_format()."
        )
    return _FORMATS[name]


def format_names() -> tuple[str, ...]:
    """Names of the registered formats."""
    return tuple(_FORMATS)


# ---------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 python batches that can build NumPy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            # Protocol-2 pickles written by Python 3 wrap bytes as _codecs.encode(str, 'latin1').
            ("_codecs", "encode"),
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"Refusing to load {module}.{name} from a CIFAR-10 batch: only NumPy arrays "
                "are expected (this file is not the official release)."
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if name == "encode":
            return codecs.encode
        return getattr(np, name)


def _numpy_reconstruct():
    try:  # NumPy ≥ 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _tar_members(path: str | os.PathLike, wanted: Sequence[str]) -> dict[str, bytes]:
    """The regular-file members whose base names are in ``wanted`` (no extraction to disk)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if base in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    if handle is None:  # pragma: no cover - isfile() rules this out
                        continue
                    found[base] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise RawDataError(
            f"{path} is not a readable .tar.gz archive ({type(exc).__name__}: {exc}); "
            "it is corrupt or truncated. Delete it and place the official file."
        ) from exc
    return found


def _require(found: Mapping[str, bytes], wanted: Sequence[str], path) -> None:
    missing = [name for name in wanted if name not in found]
    if missing:
        raise RawDataError(
            f"{path} lacks the member(s) {', '.join(missing)}: not a CIFAR-10 archive."
        )


def _cifar_records(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(payload) % _CIFAR_RECORD:
        raise RawDataError(
            f"{where}: {len(payload)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
            "CIFAR-10 records (1 label byte + 3072 pixel bytes); the file is truncated."
        )
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    return _chw_to_hwc(records[:, 1:]), labels


def _chw_to_hwc(rows: np.ndarray) -> np.ndarray:
    """(n, 3072) channel-major pixel rows → (n, 32, 32, 3): the project uses (H, W, C)."""
    return np.ascontiguousarray(rows.reshape(-1, *_CIFAR_SHAPE_CHW).transpose(0, 2, 3, 1))


def _binary_parts(members: Mapping[str, bytes], path) -> list[tuple[np.ndarray, np.ndarray]]:
    _require(members, _CIFAR_BINARY_MEMBERS, path)
    return [_cifar_records(members[n], f"{path}:{n}") for n in _CIFAR_BINARY_MEMBERS]


def _python_parts(members: Mapping[str, bytes], path) -> list[tuple[np.ndarray, np.ndarray]]:
    _require(members, _CIFAR_PYTHON_MEMBERS, path)
    parts = []
    for name in _CIFAR_PYTHON_MEMBERS:
        where = f"{path}:{name}"
        try:
            batch = _NumpyOnlyUnpickler(io.BytesIO(members[name]), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise RawDataError(f"{where} is not a valid CIFAR-10 python batch: {exc}") from exc
        if not isinstance(batch, dict):
            raise RawDataError(f"{where}: expected a dict, found {type(batch).__name__}.")
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise RawDataError(f"{where}: missing the 'data' or 'labels' entry.")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
            raise RawDataError(
                f"{where}: data is {data.dtype}{data.shape}, expected uint8 (n, 3072)."
            )
        if labels.shape != (data.shape[0],):
            raise RawDataError(f"{where}: {labels.size} labels for {data.shape[0]} images.")
        parts.append((_chw_to_hwc(data), labels))
    return parts


def _cifar_splits(parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    train, test = parts[:-1], parts[-1]
    return {
        "train_images": np.concatenate([p[0] for p in train]),
        "train_labels": np.concatenate([p[1] for p in train]),
        "test_images": test[0],
        "test_labels": test[1],
    }


def read_cifar10_binary(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads ``cifar-10-binary.tar.gz`` (data_batch_1..5.bin, test_batch.bin).

    Returns:
        ``train_images`` uint8 (50000, 32, 32, 3), ``train_labels`` int64 (50000,),
        ``test_images`` uint8 (10000, 32, 32, 3), ``test_labels`` int64 (10000,)
        (fewer rows for smaller, generated archives), in file order.
    """
    return _cifar_splits(_binary_parts(_tar_members(path, _CIFAR_BINARY_MEMBERS), path))


def read_cifar10_python(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads ``cifar-10-python.tar.gz`` with an unpickler that only builds NumPy arrays.

    Returns:
        As :func:`read_cifar10_binary`.
    """
    return _cifar_splits(_python_parts(_tar_members(path, _CIFAR_PYTHON_MEMBERS), path))


def read_cifar10_archive(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads either CIFAR-10 release, told apart by its member names (binary first).

    Returns:
        As :func:`read_cifar10_binary`.
    """
    members = _tar_members(path, (*_CIFAR_BINARY_MEMBERS, *_CIFAR_PYTHON_MEMBERS))
    if any(name in members for name in _CIFAR_BINARY_MEMBERS):
        return _cifar_splits(_binary_parts(members, path))
    if any(name in members for name in _CIFAR_PYTHON_MEMBERS):
        return _cifar_splits(_python_parts(members, path))
    raise RawDataError(
        f"{path} holds neither data_batch_*.bin (binary release) nor data_batch_* (python "
        "release) members: not a CIFAR-10 archive."
    )


# ---------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, and any dataset stored like them)
# ---------------------------------------------------------------------------


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Reads an IDX file (``.gz`` or uncompressed) of unsigned bytes.

    Args:
        path: File path.
        expected_ndim: 3 for image files (N, rows, cols), 1 for label files (N,).

    Returns:
        uint8 array with the shape given by the header.

    Raises:
        RawDataError: For a wrong magic number, or a file shorter/longer than its
            header says (the message names the file, expected and actual size).
    """
    path = str(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                payload = handle.read()
        else:
            with open(path, "rb") as handle:
                payload = handle.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise RawDataError(
            f"{path} is truncated or not gzip data ({type(exc).__name__}: {exc}). "
            "Delete it and place the official file."
        ) from exc
    if len(payload) < 4:
        raise RawDataError(f"{path} is truncated: {len(payload)} bytes, not even an IDX header.")
    zero0, zero1, type_code, ndim = payload[:4]
    if zero0 or zero1 or type_code != _IDX_UBYTE or ndim == 0:
        raise RawDataError(
            f"{path} is not an unsigned-byte IDX file: magic number 0x{payload[:4].hex()} "
            f"(expected 0x0000080{expected_ndim or 'N'})."
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise RawDataError(
            f"{path} has {ndim} dimension(s) (magic 0x{payload[:4].hex()}); expected "
            f"{expected_ndim} (0x0000080{expected_ndim}). Are image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise RawDataError(f"{path} is truncated inside its header ({len(payload)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(payload[4:header], dtype=">u4"))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(payload) != expected:
        state = "truncated" if len(payload) < expected else "longer than its header says"
        raise RawDataError(
            f"{path} is {state}: header dims {dims} need {expected} bytes, found "
            f"{len(payload)} (decompressed). Delete it and place the official file."
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_dataset(paths: Mapping[str, str | os.PathLike]) -> dict[str, np.ndarray]:
    """Reads the four IDX files of an MNIST-like dataset.

    Args:
        paths: ``{"train_images", "train_labels", "test_images", "test_labels"}`` → path.

    Returns:
        ``train_images`` uint8 (N, H, W, 1), ``train_labels`` int64 (N,), and the same
        for ``test_``.
    """
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], _IDX_IMAGES_NDIM)
        labels = read_idx(paths[f"{split}_labels"], _IDX_LABELS_NDIM).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise RawDataError(
                f"{paths[f'{split}_images']} has {images.shape[0]} images but "
                f"{paths[f'{split}_labels']} has {labels.shape[0]} labels."
            )
        out[f"{split}_images"] = images[..., None]
        out[f"{split}_labels"] = labels
    return out


# ---------------------------------------------------------------------------
# scikit-learn digits (no file)
# ---------------------------------------------------------------------------


def read_digits(num_train: int = DIGITS_NUM_TRAIN) -> dict[str, np.ndarray]:
    """scikit-learn's 1 797 real 8×8 digits, split 1 437 / 360 in file order (docs/methods.md §2.3).

    Returns:
        ``train_images`` uint8 (1437, 8, 8, 1) with values 0..16, ``train_labels``
        int64 (1437,), ``test_images`` (360, 8, 8, 1), ``test_labels`` (360,).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return {
        "train_images": images[:num_train],
        "train_labels": labels[:num_train],
        "test_images": images[num_train:],
        "test_labels": labels[num_train:],
    }


def _read_cifar10(paths: Mapping[str, Path], spec: Any) -> dict[str, np.ndarray]:
    return read_cifar10_archive(paths["archive"])


def _read_idx(paths: Mapping[str, Path], spec: Any) -> dict[str, np.ndarray]:
    return read_idx_dataset(paths)


def _read_sklearn_digits(paths: Mapping[str, Path], spec: Any) -> dict[str, np.ndarray]:
    return read_digits(spec.num_train)


register_format(Format("cifar10", _read_cifar10, ("archive",)))
register_format(Format("idx", _read_idx, SPLIT_KEYS))
register_format(Format("sklearn_digits", _read_sklearn_digits, ()))
