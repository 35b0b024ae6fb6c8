"""datasets.raw.checksums: accepted values, verification, and a mismatch message with the fix."""

from __future__ import annotations

import hashlib

import pytest

from linearized_kedro.datasets.raw.checksums import (
    normalize_checksum,
    parse_checksum,
    verify_file,
)
from linearized_kedro.datasets.raw.errors import ChecksumMismatchError, RawDataError


def test_parse_checksum_forms():
    assert parse_checksum("A" * 32) == ("md5", "a" * 32)
    assert parse_checksum("sha256:" + "B" * 64) == ("sha256", "b" * 64)
    assert normalize_checksum(" " + "c" * 64) == "sha256:" + "c" * 64
    for bad in ("crc32:1234", "md5:" + "g" * 32, "sha256:" + "a" * 63, "abc"):
        with pytest.raises(RawDataError, match="not understood"):
            parse_checksum(bad)


def test_verify_accepts_any_listed_value_and_names_the_fix_on_mismatch(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"official bytes")
    md5 = "md5:" + hashlib.md5(b"official bytes").hexdigest()
    sha = "sha256:" + hashlib.sha256(b"official bytes").hexdigest()
    other = "md5:" + "0" * 32
    # A second accepted value (a redistributor's repack) is enough.
    assert verify_file(path, [other, md5]) == md5
    assert verify_file(path, [sha.upper().replace("SHA256", "sha256")]) == sha
    # Negative control: one changed byte and the same accepted values refuse the file.
    path.write_bytes(b"official bytez")
    got = "md5:" + hashlib.md5(b"official bytez").hexdigest()
    with pytest.raises(ChecksumMismatchError) as info:
        verify_file(path, [other, md5])
    message = str(info.value)
    assert f"Checksum mismatch for {path}" in message
    assert f"expected {other} or {md5}, found {got}" in message
    assert "delete" in message and "data.download=auto" in message
    assert f"'{path.name}': '{got}'" in message  # how to accept a trusted copy
    assert info.value.expected == (other, md5) and info.value.found == (got,)


def test_file_without_any_checksum_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"x")
    with pytest.raises(RawDataError, match="No published checksum is known"):
        verify_file(path, [])
