"""Errors of the raw-data layer: each names what went wrong, where, and the fix.

All derive from :class:`ValueError` (what the first wave raised), so existing ``except
ValueError`` callers keep working; ``RawImageDataset`` re-raises them as Kedro's
``DatasetError`` with the same message.
"""

from __future__ import annotations

import errno


class RawDataError(ValueError):
    """Base of every raw-data error."""


class UnknownDatasetError(RawDataError):
    """A dataset name that no registered spec carries."""


class ChecksumMismatchError(RawDataError):
    """A file whose bytes match none of its accepted checksums; it must not be used.

    Attributes:
        path: the file checked (or the file name of a refused download).
        expected: the accepted ``"algo:hex"`` values.
        found: the computed ``"algo:hex"`` values, one per algorithm tried.
    """

    def __init__(self, message: str, path: str, expected: tuple[str, ...], found: tuple[str, ...]):
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.found = found


class MissingRawFilesError(RawDataError):
    """Files that are neither on disk nor downloadable now (offline, ``download=never``)."""


class DownloadError(RawDataError):
    """Every source of a file failed (HTTP error, refused connection, bad protocol)."""


class NoSpaceError(RawDataError):
    """The disk (or quota) ran out while a download was written.

    Attributes:
        errno: ``errno.ENOSPC`` or ``errno.EDQUOT``, as the operating system reported it.
        directory: where the file was being written.
    """

    def __init__(self, message: str, directory: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.errno = code
        self.directory = directory
