"""Writers of tiny files in the exact official CIFAR-10 / MNIST / Fashion-MNIST formats.

Used by the dataset tests and by end-to-end tests (``kedro run`` on generated data).
Every writer is deterministic in ``seed`` (archives carry mtime 0) and returns
``{filename: "sha256:<hex>"}``, ready to pass as ``RawImageDataset(checksums=...)``.

Images are seeded noise around a class-dependent grey level, so a model can
learn them; :func:`synthetic_split` regenerates exactly what a writer stored.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR_SHAPE = (32, 32, 3)
IDX_SHAPE = (28, 28)
_IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def synthetic_split(
    n: int, shape: tuple[int, ...], seed: int, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded uint8 images (n, *shape) and balanced int64 labels (n,) in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    level = 30.0 + 20.0 * labels.reshape((n,) + (1,) * len(shape))
    images = np.clip(rng.normal(level, 40.0, size=(n, *shape)), 0, 255).astype(np.uint8)
    return images, labels


def cifar_splits(n_train: int, n_test: int, seed: int):
    """The (train_images, train_labels, test_images, test_labels) the CIFAR writers store."""
    return (
        *synthetic_split(n_train, CIFAR_SHAPE, seed),
        *synthetic_split(n_test, CIFAR_SHAPE, seed + 1),
    )


def idx_splits(n_train: int, n_test: int, seed: int):
    """The (train_images (N,28,28), train_labels, test_images, test_labels) ``write_idx`` stores."""
    return (
        *synthetic_split(n_train, IDX_SHAPE, seed),
        *synthetic_split(n_test, IDX_SHAPE, seed + 1),
    )


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _write_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(payload))


def _batches(n_train: int) -> list[slice]:
    edges = np.linspace(0, n_train, 6).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def write_cifar10_binary(directory, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """Writes ``cifar-10-binary.tar.gz``: ``cifar-10-batches-bin/data_batch_{1..5}.bin``,
    ``test_batch.bin`` (records: 1 label byte + 3072 channel-major pixel bytes) and
    ``batches.meta.txt``. The training rows are spread over the five batches in order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = cifar_splits(n_train, n_test, seed)

    def records(images, labels) -> bytes:
        chw = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
        return np.concatenate([labels.astype(np.uint8)[:, None], chw], axis=1).tobytes()

    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": records(xtr[s], ytr[s])
        for i, s in enumerate(_batches(n_train))
    }
    members["cifar-10-batches-bin/test_batch.bin"] = records(xte, yte)
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(_CIFAR_CLASSES) + "\n\n").encode()
    path = directory / "cifar-10-binary.tar.gz"
    _write_tar_gz(path, members)
    return {path.name: _sha256(path)}


def write_cifar10_python(directory, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """Writes ``cifar-10-python.tar.gz``: ``cifar-10-batches-py/data_batch_{1..5}``,
    ``test_batch`` (protocol-2 pickles of ``{b'batch_label', b'labels', b'data' uint8
    (n, 3072), b'filenames'}``) and ``batches.meta``; same content as the binary writer.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = cifar_splits(n_train, n_test, seed)

    def batch(images, labels, name: str) -> bytes:
        record = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1).copy(),
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
        }
        return pickle.dumps(record, protocol=2)

    members = {
        f"cifar-10-batches-py/data_batch_{i + 1}": batch(
            xtr[s], ytr[s], f"training batch {i + 1} of 5"
        )
        for i, s in enumerate(_batches(n_train))
    }
    members["cifar-10-batches-py/test_batch"] = batch(xte, yte, "testing batch 1 of 1")
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {
            b"num_cases_per_batch": 10000,
            b"label_names": [c.encode() for c in _CIFAR_CLASSES],
            b"num_vis": 3072,
        },
        protocol=2,
    )
    path = directory / "cifar-10-python.tar.gz"
    _write_tar_gz(path, members)
    return {path.name: _sha256(path)}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian uint32 dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(
    directory,
    dataset: str = "mnist",
    n_train: int = 100,
    n_test: int = 20,
    seed: int = 0,
    gz: bool = True,
) -> dict[str, str]:
    """Writes the four MNIST / Fashion-MNIST IDX files (``.gz`` unless ``gz=False``).

    ``dataset`` only documents which dataset the files stand in for: both use the
    same file names and format.
    """
    if dataset not in ("mnist", "fashion_mnist"):
        raise ValueError(f"dataset must be 'mnist' or 'fashion_mnist', got {dataset!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = dict(zip(_IDX_STEMS, idx_splits(n_train, n_test, seed), strict=True))
    out = {}
    for role, stem in _IDX_STEMS.items():
        payload = idx_bytes(arrays[role])
        if gz:
            path = directory / f"{stem}.gz"
            with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g:
                g.write(payload)
        else:
            path = directory / stem
            path.write_bytes(payload)
        out[path.name] = _sha256(path)
    return out
