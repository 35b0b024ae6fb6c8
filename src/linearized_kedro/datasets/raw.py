"""Readers for the official CIFAR-10 / MNIST / Fashion-MNIST files, verified and offline-friendly.

SPEC §1.1 "Offline operation": the project reads the datasets from local files
in their official formats, checks every file against the checksum its owners
publish before using it, and downloads a file itself only when it is missing
and the network answers. ``digits`` (scikit-learn's 1 797 real 8×8 images)
needs no file at all and is the offline demo.

Search order for a missing file: ``<root>/<dataset>/``, then system locations
(Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST under
``/usr/share/datasets/fashion-mnist/``), then the official download source.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import logging
import os
import pickle
import socket
import tarfile
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DATASET_NAMES = ("cifar10", "mnist", "fashion_mnist", "digits")
DOWNLOAD_MODES = ("auto", "always", "never")

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

# One CIFAR-10 binary record: 1 label byte + 3×32×32 pixel bytes (channel-major).
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_BATCH = 10_000
_CIFAR_TRAIN_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_MEMBER = "test_batch"

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_IDX_UBYTE = 0x08
_IDX_IMAGES_NDIM = 3
_IDX_LABELS_NDIM = 1

_PROBE_TIMEOUT_S = 2.5  # two hosts at most → an offline failure takes ≤ 5 s
_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RawFile:
    """One official file: its name, accepted checksums, download URLs and format.

    ``checksums`` are ``"md5:<hex>"`` / ``"sha256:<hex>"``; a file is accepted when
    it matches any of them (e.g. the dataset owners' archive and Debian's repack).
    """

    filename: str
    checksums: tuple[str, ...]
    urls: tuple[str, ...]
    fmt: str  # "cifar_binary" | "cifar_python" | "idx_gz" | "idx"


@dataclass(frozen=True)
class RawSpec:
    """What makes up one dataset: a role per file, each with alternative candidates."""

    name: str
    classes: tuple[str, ...]
    roles: tuple[tuple[str, tuple[RawFile, ...]], ...]
    system_dirs: tuple[str, ...] = ()


def _idx_role(role: str, stem: str, md5s: Sequence[str], bases: Sequence[str]) -> tuple:
    gz = f"{stem}.gz"
    return (
        role,
        (
            RawFile(gz, tuple(f"md5:{m}" for m in md5s), tuple(b + gz for b in bases), "idx_gz"),
            # Uncompressed copies have no published checksum: they need a
            # ``checksums`` entry from the user (see RawImageDataset).
            RawFile(stem, (), (), "idx"),
        ),
    )


_MNIST_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_BASES = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

# Published MD5s: CIFAR-10 from https://www.cs.toronto.edu/~kriz/cifar.html; MNIST and
# Fashion-MNIST as listed in torchvision's dataset sources (identical to the owners').
# Fashion-MNIST's second value per file is Debian's (package dataset-fashion-mnist
# 0.0~git20200523.55506a9-1, /var/lib/dpkg/info/dataset-fashion-mnist.md5sums): Debian
# recompressed the .gz files, so their bytes differ while the images are the same.
SPECS: dict[str, RawSpec] = {
    "cifar10": RawSpec(
        name="cifar10",
        classes=CIFAR10_CLASSES,
        roles=(
            (
                "archive",
                (
                    # The binary version first: it needs no unpickling at all.
                    RawFile(
                        "cifar-10-binary.tar.gz",
                        ("md5:c32a1d4ab5d03f1284b67883e8d87530",),
                        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                        "cifar_binary",
                    ),
                    RawFile(
                        "cifar-10-python.tar.gz",
                        ("md5:c58f30108f718f92721af3b95e74349a",),
                        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                        "cifar_python",
                    ),
                ),
            ),
        ),
    ),
    "mnist": RawSpec(
        name="mnist",
        classes=DIGIT_CLASSES,
        roles=(
            _idx_role(
                "train_images",
                "train-images-idx3-ubyte",
                ["f68b3c2dcbeaaa9fbdd348bbdeb94873"],
                _MNIST_BASES,
            ),
            _idx_role(
                "train_labels",
                "train-labels-idx1-ubyte",
                ["d53e105ee54ea40749a09fcbcd1e9432"],
                _MNIST_BASES,
            ),
            _idx_role(
                "test_images",
                "t10k-images-idx3-ubyte",
                ["9fb629c4189551a2d022fa330f9573f3"],
                _MNIST_BASES,
            ),
            _idx_role(
                "test_labels",
                "t10k-labels-idx1-ubyte",
                ["ec29112dd5afa0611ce80d1b7f02629c"],
                _MNIST_BASES,
            ),
        ),
    ),
    "fashion_mnist": RawSpec(
        name="fashion_mnist",
        classes=FASHION_MNIST_CLASSES,
        roles=(
            _idx_role(
                "train_images",
                "train-images-idx3-ubyte",
                ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c"],
                _FASHION_BASES,
            ),
            _idx_role(
                "train_labels",
                "train-labels-idx1-ubyte",
                ["25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9"],
                _FASHION_BASES,
            ),
            _idx_role(
                "test_images",
                "t10k-images-idx3-ubyte",
                ["bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a"],
                _FASHION_BASES,
            ),
            _idx_role(
                "test_labels",
                "t10k-labels-idx1-ubyte",
                ["bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01"],
                _FASHION_BASES,
            ),
        ),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}

# SPEC §2.3: the first 1 437 digits are the train split, the last 360 the test split.
DIGITS_NUM_TRAIN = 1437


# ---------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------


def parse_checksum(value: str) -> tuple[str, str]:
    """Splits ``"md5:<hex>"`` / ``"sha256:<hex>"`` (bare hex: inferred from its length).

    Raises:
        ValueError: If the algorithm or the digest is malformed.
    """
    text = str(value).strip().lower()
    algo, sep, digest = text.partition(":")
    if not sep:
        digest = algo
        algo = {32: "md5", 64: "sha256"}.get(len(digest), "")
    lengths = {"md5": 32, "sha256": 64}
    if algo not in lengths or len(digest) != lengths[algo] or not _is_hex(digest):
        raise ValueError(
            f"Checksum {value!r} is not understood: write 'md5:<32 hex digits>' or "
            "'sha256:<64 hex digits>'."
        )
    return algo, digest


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def file_digest(path: str | os.PathLike, algo: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, accepted: Iterable[str]) -> str:
    """Checks a file against the accepted checksums; returns the one that matched.

    Raises:
        ValueError: If no checksum is known for the file, or none matches; the file
            must then not be used.
    """
    accepted = tuple(accepted)
    if not accepted:
        raise ValueError(
            f"No published checksum is known for {path}. Use the official .gz/.tar.gz "
            "file instead, or pass checksums={'<filename>': 'sha256:<hex>'} to "
            "RawImageDataset if you trust this copy."
        )
    digests: dict[str, str] = {}
    for item in accepted:
        algo, expected = parse_checksum(item)
        if algo not in digests:
            digests[algo] = file_digest(path, algo)
        if digests[algo] == expected:
            return f"{algo}:{expected}"
    found = ", ".join(f"{a}:{d}" for a, d in digests.items())
    raise ValueError(
        f"Checksum mismatch for {path}: expected {' or '.join(accepted)}, found {found}. "
        "The file is corrupt, incomplete or not the official release; it was not used. "
        "Delete it and place (or let the project download) the official file."
    )


# ---------------------------------------------------------------------------
# Readers
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
    """Reads the regular-file members whose base names are in ``wanted`` (no extraction)."""
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
        raise ValueError(
            f"{path} is not a readable .tar.gz archive ({type(exc).__name__}: {exc}); "
            "it is corrupt or truncated. Delete it and place the official file."
        ) from exc
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(
            f"{path} lacks the member(s) {', '.join(missing)}: not a CIFAR-10 archive."
        )
    return found


def _cifar_records(payload: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(payload) % _CIFAR_RECORD:
        raise ValueError(
            f"{where}: {len(payload)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
            "CIFAR-10 records (1 label byte + 3072 pixel bytes); the file is truncated."
        )
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    # Stored channel-major (3, 32, 32); the project uses (H, W, C).
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar10_binary(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads ``cifar-10-binary.tar.gz`` (data_batch_1..5.bin, test_batch.bin).

    Returns:
        ``train_images`` uint8 (50000, 32, 32, 3), ``train_labels`` int64 (50000,),
        ``test_images`` uint8 (10000, 32, 32, 3), ``test_labels`` int64 (10000,)
        (fewer rows for smaller, generated archives), in file order.
    """
    names = [f"{m}.bin" for m in (*_CIFAR_TRAIN_MEMBERS, _CIFAR_TEST_MEMBER)]
    members = _tar_members(path, names)
    parts = [_cifar_records(members[n], f"{path}:{n}") for n in names]
    return _cifar_splits(parts, path)


def read_cifar10_python(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads ``cifar-10-python.tar.gz`` with an unpickler that only builds NumPy arrays.

    Returns:
        As :func:`read_cifar10_binary`.
    """
    names = [*_CIFAR_TRAIN_MEMBERS, _CIFAR_TEST_MEMBER]
    members = _tar_members(path, names)
    parts = []
    for name in names:
        where = f"{path}:{name}"
        try:
            batch = _NumpyOnlyUnpickler(io.BytesIO(members[name]), encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"{where} is not a valid CIFAR-10 python batch: {exc}") from exc
        if not isinstance(batch, dict):
            raise ValueError(f"{where}: expected a dict, found {type(batch).__name__}.")
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{where}: missing the 'data' or 'labels' entry.")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(
                f"{where}: data is {data.dtype}{data.shape}, expected uint8 (n, 3072)."
            )
        if labels.shape != (data.shape[0],):
            raise ValueError(f"{where}: {labels.size} labels for {data.shape[0]} images.")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        parts.append((np.ascontiguousarray(images), labels))
    return _cifar_splits(parts, path)


def _cifar_splits(parts: list[tuple[np.ndarray, np.ndarray]], path) -> dict[str, np.ndarray]:
    train, test = parts[:-1], parts[-1]
    out = {
        "train_images": np.concatenate([p[0] for p in train]),
        "train_labels": np.concatenate([p[1] for p in train]),
        "test_images": test[0],
        "test_labels": test[1],
    }
    _check_labels(out, 10, str(path))
    return out


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Reads an IDX file (``.gz`` or uncompressed) of unsigned bytes.

    Args:
        path: File path.
        expected_ndim: 3 for image files (N, rows, cols), 1 for label files (N,).

    Returns:
        uint8 array with the shape given by the header.

    Raises:
        ValueError: For a wrong magic number, or a file shorter/longer than its
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
        raise ValueError(
            f"{path} is truncated or not gzip data ({type(exc).__name__}: {exc}). "
            "Delete it and place the official file."
        ) from exc
    if len(payload) < 4:
        raise ValueError(f"{path} is truncated: {len(payload)} bytes, not even an IDX header.")
    zero0, zero1, type_code, ndim = payload[:4]
    if zero0 or zero1 or type_code != _IDX_UBYTE or ndim == 0:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file: magic number 0x{payload[:4].hex()} "
            f"(expected 0x0000080{expected_ndim or 'N'})."
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(
            f"{path} has {ndim} dimension(s) (magic 0x{payload[:4].hex()}); expected "
            f"{expected_ndim} (0x0000080{expected_ndim}). Are image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise ValueError(f"{path} is truncated inside its header ({len(payload)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(payload[4:header], dtype=">u4"))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(payload) != expected:
        state = "truncated" if len(payload) < expected else "longer than its header says"
        raise ValueError(
            f"{path} is {state}: header dims {dims} need {expected} bytes, found "
            f"{len(payload)} (decompressed). Delete it and place the official file."
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_dataset(paths: Mapping[str, str | os.PathLike]) -> dict[str, np.ndarray]:
    """Reads the four IDX files of MNIST / Fashion-MNIST.

    Args:
        paths: ``{"train_images", "train_labels", "test_images", "test_labels"}`` → path.

    Returns:
        ``train_images`` uint8 (N, 28, 28, 1), ``train_labels`` int64 (N,), and the same
        for ``test_``.
    """
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], _IDX_IMAGES_NDIM)
        labels = read_idx(paths[f"{split}_labels"], _IDX_LABELS_NDIM).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{paths[f'{split}_images']} has {images.shape[0]} images but "
                f"{paths[f'{split}_labels']} has {labels.shape[0]} labels."
            )
        out[f"{split}_images"] = images[..., None]
        out[f"{split}_labels"] = labels
    _check_labels(out, 10, str(paths["train_labels"]))
    return out


def read_digits() -> dict[str, np.ndarray]:
    """scikit-learn's 1 797 real 8×8 digits, split 1 437 / 360 in file order (SPEC §2.3).

    Returns:
        ``train_images`` uint8 (1437, 8, 8, 1) with values 0..16, ``train_labels``
        int64 (1437,), ``test_images`` (360, 8, 8, 1), ``test_labels`` (360,).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    n = DIGITS_NUM_TRAIN
    return {
        "train_images": images[:n],
        "train_labels": labels[:n],
        "test_images": images[n:],
        "test_labels": labels[n:],
    }


def _check_labels(arrays: Mapping[str, np.ndarray], num_classes: int, where: str) -> None:
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{where}: {split} labels span {labels.min()}..{labels.max()}, expected "
                f"0..{num_classes - 1}."
            )


_READERS = {"cifar_binary": read_cifar10_binary, "cifar_python": read_cifar10_python}


# ---------------------------------------------------------------------------
# Locate, download
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocatedFile:
    """A verified file that will be read: its role, path, format and matching checksum."""

    role: str
    path: Path
    fmt: str
    checksum: str


def _accepted(candidate: RawFile, overrides: Mapping[str, str]) -> tuple[str, ...]:
    if candidate.filename in overrides:
        return (overrides[candidate.filename],)
    return candidate.checksums


def locate_files(
    dataset: str,
    root: str | os.PathLike = "data/01_raw",
    download: str = "auto",
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str] | None = None,
    show_progress: bool = True,
) -> list[LocatedFile]:
    """Finds, verifies and if needed downloads every file of ``dataset``.

    Args:
        dataset: One of ``cifar10``, ``mnist``, ``fashion_mnist`` (not ``digits``).
        root: Raw-data root; files are looked for (and downloaded to) ``<root>/<dataset>/``.
        download: ``auto`` (download missing files if the network answers), ``always``
            (download missing or failed files, and fail if the download does),
            ``never`` (local files only).
        checksums: ``{filename: "md5:..."|"sha256:..."}`` that replace the published
            values for those files (e.g. for generated test files).
        system_dirs: Extra read-only locations; default: the dataset's known ones.
        show_progress: tqdm progress bar for downloads.

    Returns:
        One verified file per role (for CIFAR-10 one archive).

    Raises:
        ValueError: For a checksum mismatch, or a missing file that cannot be
            downloaded (the message names the file(s) to place and where).
    """
    spec = _spec(dataset)
    _check_download_mode(download)
    overrides = {k: v for k, v in (checksums or {}).items()}
    for value in overrides.values():
        parse_checksum(value)
    local_dir = Path(root) / dataset
    dirs = [
        local_dir,
        *(Path(d) for d in (spec.system_dirs if system_dirs is None else system_dirs)),
    ]

    located: list[LocatedFile] = []
    missing: list[tuple[str, tuple[RawFile, ...]]] = []
    for role, candidates in spec.roles:
        hit = _find_local(role, candidates, dirs, overrides, local_dir, download)
        if hit is None:
            missing.append((role, candidates))
        else:
            located.append(hit)
    if not missing:
        return located

    placement = _placement_message(spec, missing, local_dir)
    if download == "never":
        raise ValueError(f"{placement} (download is 'never').")
    urls = [url for _, cands in missing for url in cands[0].urls]
    if download == "auto" and not network_available(urls):
        raise ValueError(f"{placement}. The download source did not answer (offline?).")
    for role, candidates in missing:
        candidate = candidates[0]  # the preferred format (CIFAR binary; .gz IDX)
        target = local_dir / candidate.filename
        checksum = download_file(
            candidate.urls, target, _accepted(candidate, overrides), show_progress=show_progress
        )
        located.append(LocatedFile(role, target, candidate.fmt, checksum))
    order = [role for role, _ in spec.roles]
    return sorted(located, key=lambda f: order.index(f.role))


def _find_local(role, candidates, dirs, overrides, local_dir, download) -> LocatedFile | None:
    for directory in dirs:
        for candidate in candidates:
            path = directory / candidate.filename
            if not path.is_file():
                continue
            try:
                checksum = verify_file(path, _accepted(candidate, overrides))
            except ValueError:
                if download == "always" and directory == local_dir and candidate.urls:
                    logger.warning("%s failed verification; it will be downloaded again.", path)
                    continue
                raise
            logger.info("Using %s (%s verified)", path, checksum)
            return LocatedFile(role, path, candidate.fmt, checksum)
    return None


def _placement_message(spec: RawSpec, missing, local_dir: Path) -> str:
    parts = []
    for _, candidates in missing:
        names = [c.filename for c in candidates if c.checksums]
        parts.append(names[0] + (f" (or {' or '.join(names[1:])})" if names[1:] else ""))
    where = f"{local_dir}/"
    if spec.system_dirs:
        where += f" (or install it system-wide: {', '.join(spec.system_dirs)})"
    sources = sorted({c[0].urls[0].rsplit("/", 1)[0] + "/" for _, c in missing if c[0].urls})
    return (
        f"{spec.name}: missing {', '.join(parts)}. Place the official file(s) in {where}; "
        f"official source: {', '.join(sources)}"
    )


def network_available(urls: Sequence[str], timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of one of ``urls`` opens quickly (≤ 2 hosts probed)."""
    hosts = []
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if parsed.hostname and (parsed.hostname, port) not in hosts:
            hosts.append((parsed.hostname, port))
    for host in hosts[:2]:
        try:
            with socket.create_connection(host, timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


def download_file(
    urls: Sequence[str],
    target: str | os.PathLike,
    accepted: Sequence[str],
    show_progress: bool = True,
) -> str:
    """Downloads the first URL that works to ``target``, verified before it appears there.

    The bytes go to a temporary sibling that is renamed to ``target`` only when complete
    and matching ``accepted``; a failed or corrupt download leaves nothing behind.

    Returns:
        The checksum that matched.

    Raises:
        ValueError: If every URL fails or the download does not verify.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
        try:
            logger.info("Downloading %s to %s", url, target)
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    open(tmp, "wb") as out,
                    tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        desc=target.name,
                        disable=not show_progress,
                    ) as bar,
                ):
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            checksum = verify_file(tmp, accepted)
            os.replace(tmp, target)
            return checksum
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise ValueError(
        f"Could not download {target.name}: "
        + "; ".join(errors)
        + f". Place it in {target.parent}/."
    )


def read_located(dataset: str, files: Sequence[LocatedFile]) -> dict[str, np.ndarray]:
    """Reads verified files (from :func:`locate_files`) into the four split arrays."""
    if dataset == "cifar10":
        (archive,) = files
        return _READERS[archive.fmt](archive.path)
    return read_idx_dataset({f.role: f.path for f in files})


def load_raw_dataset(
    dataset: str,
    root: str | os.PathLike = "data/01_raw",
    download: str = "auto",
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Locates, verifies and reads one dataset (see :func:`locate_files` for the arguments).

    Returns:
        ``{"name", "train_images" uint8 (N,H,W,C), "train_labels" int64 (N,),
        "test_images", "test_labels", "classes" list[str], "max_value" (255, or 16 for
        digits), "files" {path: checksum}}``.
    """
    spec_classes = DIGIT_CLASSES if dataset == "digits" else _spec(dataset).classes
    if dataset == "digits":
        arrays = read_digits()
        files: dict[str, str] = {}
        max_value = 16
    else:
        located = locate_files(dataset, root, download, checksums, system_dirs, show_progress)
        arrays = read_located(dataset, located)
        files = {str(f.path): f.checksum for f in located}
        max_value = 255
    logger.info(
        "Loaded %s: %d train + %d test images of shape %s",
        dataset,
        len(arrays["train_labels"]),
        len(arrays["test_labels"]),
        arrays["train_images"].shape[1:],
    )
    return {
        "name": dataset,
        **arrays,
        "classes": list(spec_classes),
        "max_value": max_value,
        "files": files,
    }


def _spec(dataset: str) -> RawSpec:
    if dataset not in SPECS:
        raise ValueError(f"Unknown dataset {dataset!r}; valid names: {', '.join(DATASET_NAMES)}.")
    return SPECS[dataset]


def _check_download_mode(download: str) -> None:
    if download not in DOWNLOAD_MODES:
        raise ValueError(
            f"download={download!r} is not one of {', '.join(DOWNLOAD_MODES)} "
            "(data.download in parameters.yml)."
        )


# ---------------------------------------------------------------------------
# Kedro dataset
# ---------------------------------------------------------------------------


class RawImageDataset(AbstractDataset[None, dict]):
    """Read-only Kedro dataset for the official image-classification files.

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
            dataset: ``cifar10`` | ``mnist`` | ``fashion_mnist`` | ``digits``.
            root: Raw-data root; files live in ``<root>/<dataset>/``.
            download: ``auto`` | ``always`` | ``never``.
            checksums: ``{filename: "md5:..."|"sha256:..."}`` overriding the published ones.
            system_dirs: Extra read-only locations (default: the dataset's known ones).
            show_progress: Show a tqdm bar while downloading.
            metadata: Free-form (``kedro-viz: {layer: raw}``); ignored by Kedro.
        """
        if dataset not in DATASET_NAMES:
            raise DatasetError(
                f"Unknown dataset {dataset!r}; valid names: {', '.join(DATASET_NAMES)} "
                "(set data.dataset, e.g. --params data.dataset=digits)."
            )
        try:
            _check_download_mode(download)
            for value in (checksums or {}).values():
                parse_checksum(value)
        except ValueError as exc:
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
                self._dataset,
                self._root,
                self._download,
                self._checksums,
                self._system_dirs,
                self._show_progress,
            )
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc

    def save(self, data: Any) -> None:
        """Raw data is read-only."""
        raise DatasetError(
            "RawImageDataset is read-only: place the official files in "
            f"{self._root}/{self._dataset}/ instead of saving."
        )

    def _exists(self) -> bool:
        if self._dataset == "digits":
            return True
        try:
            locate_files(self._dataset, self._root, "never", self._checksums, self._system_dirs)
        except ValueError:
            return False
        return True
