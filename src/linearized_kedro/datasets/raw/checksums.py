"""Checksums of raw files: ``"md5:<hex>"`` / ``"sha256:<hex>"`` values, file digests, checks.

A file is accepted when it matches **any** of its accepted values: a dataset's owners
publish one digest, and a redistributor's repack (Debian's recompressed Fashion-MNIST
``.gz`` files) has another for the same images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from linearized_kedro.datasets.raw.errors import ChecksumMismatchError, RawDataError

ALGORITHMS = {"md5": 32, "sha256": 64}  # name → hex digits
_CHUNK = 1 << 20


def parse_checksum(value: str) -> tuple[str, str]:
    """Splits ``"md5:<hex>"`` / ``"sha256:<hex>"`` (bare hex: inferred from its length).

    Returns:
        ``(algorithm, lower-case hex digest)``.

    Raises:
        RawDataError: If the algorithm or the digest is malformed.
    """
    text = str(value).strip().lower()
    algo, sep, digest = text.partition(":")
    if not sep:
        digest = algo
        algo = {n: a for a, n in ALGORITHMS.items()}.get(len(digest), "")
    if algo not in ALGORITHMS or len(digest) != ALGORITHMS[algo] or not _is_hex(digest):
        raise RawDataError(
            f"Checksum {value!r} is not understood: write 'md5:<32 hex digits>' or "
            "'sha256:<64 hex digits>'."
        )
    return algo, digest


def normalize_checksum(value: str) -> str:
    """``value`` in the canonical ``"algo:hex"`` form (lower case, algorithm explicit)."""
    algo, digest = parse_checksum(value)
    return f"{algo}:{digest}"


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

    Each algorithm is computed once however many values use it.

    Raises:
        RawDataError: If no checksum is known for the file.
        ChecksumMismatchError: If none matches; the message gives the expected and the
            computed values and how to recover. The file must then not be used.
    """
    accepted = tuple(normalize_checksum(a) for a in accepted)
    if not accepted:
        raise RawDataError(
            f"No published checksum is known for {path}. Use the official .gz/.tar.gz "
            "file instead, or pass checksums={'<filename>': 'sha256:<hex>'} to "
            "RawImageDataset if you trust this copy."
        )
    digests: dict[str, str] = {}
    for item in accepted:
        algo, expected = item.split(":")
        if algo not in digests:
            digests[algo] = file_digest(path, algo)
        if digests[algo] == expected:
            return item
    found = tuple(f"{a}:{d}" for a, d in digests.items())
    name = os.path.basename(os.fspath(path))
    raise ChecksumMismatchError(
        f"Checksum mismatch for {path}: expected {' or '.join(accepted)}, found "
        f"{', '.join(found)}. The file is corrupt, incomplete or not the official release; "
        f"it was not used. To recover, delete {path} and run again with "
        "data.download=auto (or always) to fetch the official file, or place the official "
        f"file there yourself. If you trust this copy, pass checksums={{'{name}': "
        f"'{found[-1]}'}} to RawImageDataset.",
        path=str(path),
        expected=accepted,
        found=found,
    )
