"""Writers of tiny files in the exact official CIFAR-10 / MNIST / Fashion-MNIST formats.

Used by the dataset tests and by end-to-end tests (``kedro run`` on generated data).
Every writer is deterministic in ``seed`` (archives carry mtime 0) and returns
``{filename: "sha256:<hex>"}``, ready to pass as ``RawImageDataset(checksums=...)``.

Images are seeded noise around a class-dependent grey level, so a model can
learn them; :func:`synthetic_split` regenerates exactly what a writer stored.
:func:`http_server` serves a folder of such files on 127.0.0.1 to test downloads.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def idx_splits(
    n_train: int,
    n_test: int,
    seed: int,
    shape: tuple[int, int] = IDX_SHAPE,
    num_classes: int = 10,
):
    """The (train_images (N, *shape), train_labels, test_images, test_labels) ``write_idx`` stores."""
    return (
        *synthetic_split(n_train, shape, seed, num_classes),
        *synthetic_split(n_test, shape, seed + 1, num_classes),
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


def raw_images_catalog(checksums: dict[str, str]) -> str:
    """A ``raw_images`` catalog entry that reads local files with these checksums only.

    Written to a project's ``conf/<env>/catalog.yml`` beside files from
    :func:`write_cifar10_binary`: the run reads them and never downloads.
    """
    return (
        "raw_images:\n"
        "  type: linearized_kedro.datasets.RawImageDataset\n"
        "  dataset: ${runtime_params:data.dataset, ${globals:defaults.dataset}}\n"
        "  root: data/01_raw\n"
        "  download: never\n"
        f"  checksums: {json.dumps(checksums)}\n"
    )


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
    shape: tuple[int, int] = IDX_SHAPE,
    num_classes: int = 10,
) -> dict[str, str]:
    """Writes the four IDX files of an MNIST-like dataset (``.gz`` unless ``gz=False``).

    ``dataset`` only documents which dataset the files stand in for: MNIST, Fashion-MNIST
    and any dataset declared with the ``idx`` format use the same file names. ``shape``
    (H, W) and ``num_classes`` make files for other image sizes and class counts.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    splits = idx_splits(n_train, n_test, seed, shape, num_classes)
    arrays = dict(zip(_IDX_STEMS, splits, strict=True))
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging each request to stderr, recording the paths asked for."""

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def do_GET(self):  # noqa: N802 - the base class's name
        self.server.requests.append(self.path)
        super().do_GET()


@contextmanager
def http_server(directory) -> Iterator[tuple[str, list[str]]]:
    """Serves ``directory`` over HTTP on 127.0.0.1 (a free port) in a background thread.

    Yields:
        ``(base_url, requests)``: the URL of the folder, ending in ``/``, and the list of
        request paths the server received so far (to count downloads).
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
