"""Finding, verifying and downloading the official files of a dataset.

Search order for each file (docs/methods.md §1.1 "Offline operation"): ``<root>/<dataset>/``, then
the spec's system folders (Debian's ``dataset-fashion-mnist`` installs Fashion-MNIST in
``/usr/share/datasets/fashion-mnist/``), then the official download sources. Every file
is checked against its accepted checksums before it is used.

Downloads go through pooch: it streams to a temporary file in the target folder, checks
the hash, and only then renames the file into place, so a failed, corrupt or interrupted
download never appears under the file's name. Before downloading, a quick TCP probe of the
sources' hosts makes a machine without network fail in seconds with a message naming the
files to place and the folder, instead of waiting for connection timeouts.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pooch
from tqdm.auto import tqdm

from linearized_kedro.datasets.raw.checksums import normalize_checksum, verify_file
from linearized_kedro.datasets.raw.errors import (
    ChecksumMismatchError,
    DownloadError,
    MissingRawFilesError,
    NoSpaceError,
    RawDataError,
)
from linearized_kedro.datasets.raw.specs import DatasetSpec, FileRole, RawFile, dataset_spec

logger = logging.getLogger(__name__)

DOWNLOAD_MODES = ("auto", "always", "never")
_PROBE_TIMEOUT_S = 2.5  # two hosts at most → an offline failure takes ≤ 5 s
_DOWNLOAD_TIMEOUT_S = 30.0  # per connection attempt and per read, not for the whole file
_STALE_PARTIAL_S = 20 * _DOWNLOAD_TIMEOUT_S
_PARTIAL_NAME = re.compile(r"^tmp[a-z0-9_]{8}$")  # tempfile.NamedTemporaryFile's names
_NO_SPACE = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}


@dataclass(frozen=True)
class LocatedFile:
    """A verified file that will be read: its role, path and the checksum it matched."""

    role: str
    path: Path
    checksum: str


def check_download_mode(download: str) -> None:
    """Raises a :class:`RawDataError` unless ``download`` is ``auto | always | never``."""
    if download not in DOWNLOAD_MODES:
        raise RawDataError(
            f"download={download!r} is not one of {', '.join(DOWNLOAD_MODES)} "
            "(data.download in parameters.yml)."
        )


def resolve_spec(dataset: str | DatasetSpec) -> DatasetSpec:
    """``dataset`` itself if it is a spec, else the registered spec of that name."""
    return dataset if isinstance(dataset, DatasetSpec) else dataset_spec(dataset)


def locate_files(
    dataset: str | DatasetSpec,
    root: str | os.PathLike = "data/01_raw",
    download: str = "auto",
    checksums: Mapping[str, str] | None = None,
    system_dirs: Sequence[str] | None = None,
    show_progress: bool = True,
) -> list[LocatedFile]:
    """Finds, verifies and if needed downloads every file of ``dataset``.

    Args:
        dataset: A registered dataset name (or its :class:`DatasetSpec`).
        root: Raw-data root; files are looked for (and downloaded to) ``<root>/<dataset>/``.
        download: ``auto`` (download missing files if the network answers), ``always``
            (download missing or failed files, and fail if the download does),
            ``never`` (local files only).
        checksums: ``{filename: "md5:..."|"sha256:..."}`` that replace the published
            values for those files (e.g. for generated test files).
        system_dirs: Extra read-only locations; default: the spec's ``system_dirs``.
        show_progress: A download progress bar (on a terminal only).

    Returns:
        One verified file per role, in the spec's role order (none for bundled data).

    Raises:
        ChecksumMismatchError: A local file that matches none of its checksums.
        MissingRawFilesError: Files that are missing and cannot be downloaded now; the
            message names the files to place and the folder.
        DownloadError, NoSpaceError: A download that failed.
    """
    spec = resolve_spec(dataset)
    check_download_mode(download)
    overrides = {name: normalize_checksum(value) for name, value in (checksums or {}).items()}
    local_dir = Path(root) / spec.name
    extra = spec.system_dirs if system_dirs is None else system_dirs
    dirs = [local_dir, *(Path(d) for d in extra)]

    located: list[LocatedFile] = []
    missing: list[FileRole] = []
    for role in spec.files:
        hit = _find_local(role, dirs, overrides, local_dir, download)
        if hit is None:
            missing.append(role)
        else:
            located.append(hit)
    if not missing:
        return located

    placement = _placement_message(spec, missing, local_dir)
    if download == "never":
        raise MissingRawFilesError(f"{placement} (download is 'never').")
    not_downloadable = [r.role for r in missing if r.download_candidate is None]
    if not_downloadable:
        raise MissingRawFilesError(
            f"{placement}. No download source is known for {', '.join(not_downloadable)}."
        )
    urls = [url for role in missing for url in role.download_candidate.urls]
    if download == "auto" and not network_available(urls):
        raise MissingRawFilesError(f"{placement}. The download source did not answer (offline?).")
    for role in missing:
        candidate = role.download_candidate
        target = local_dir / candidate.filename
        checksum = download_file(
            candidate.urls, target, _accepted(candidate, overrides), show_progress=show_progress
        )
        located.append(LocatedFile(role.role, target, checksum))
    order = list(spec.roles)
    return sorted(located, key=lambda f: order.index(f.role))


def _accepted(candidate: RawFile, overrides: Mapping[str, str]) -> tuple[str, ...]:
    if candidate.filename in overrides:
        return (overrides[candidate.filename],)
    return candidate.checksums


def _find_local(
    role: FileRole, dirs: Sequence[Path], overrides: Mapping[str, str], local_dir: Path, download
) -> LocatedFile | None:
    for directory in dirs:
        for candidate in role.candidates:
            path = directory / candidate.filename
            if not path.is_file():
                continue
            try:
                checksum = verify_file(path, _accepted(candidate, overrides))
            except ChecksumMismatchError:
                if download == "always" and directory == local_dir and candidate.urls:
                    logger.warning("%s failed verification; it will be downloaded again.", path)
                    continue
                raise
            logger.info("Using %s (%s verified)", path, checksum)
            return LocatedFile(role.role, path, checksum)
    return None


def _placement_message(spec: DatasetSpec, missing: Sequence[FileRole], local_dir: Path) -> str:
    parts = []
    for role in missing:
        names = [c.filename for c in role.candidates if c.checksums] or [
            role.candidates[0].filename
        ]
        parts.append(names[0] + (f" (or {' or '.join(names[1:])})" if names[1:] else ""))
    where = f"{local_dir}/"
    if spec.system_dirs:
        where += f" (or install it system-wide: {', '.join(spec.system_dirs)})"
    sources = sorted(
        {
            role.download_candidate.urls[0].rsplit("/", 1)[0] + "/"
            for role in missing
            if role.download_candidate is not None
        }
    )
    message = f"{spec.name}: missing {', '.join(parts)}. Place the official file(s) in {where}"
    return message + (f"; official source: {', '.join(sources)}" if sources else "")


def network_available(urls: Sequence[str], timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of one of ``urls`` opens quickly (≤ 2 hosts probed).

    Each probe is bounded by ``timeout_s`` including the name lookup (which the socket
    timeout does not cover: an unreachable DNS server can stall it for many seconds).
    """
    hosts: list[tuple[str, int]] = []
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if parsed.hostname and (parsed.hostname, port) not in hosts:
            hosts.append((parsed.hostname, port))
    return any(_connects(host, timeout_s) for host in hosts[:2])


def _connects(host: tuple[str, int], timeout_s: float) -> bool:
    """Whether ``host`` accepts a TCP connection within ``timeout_s``, lookup included."""
    answer: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(host, timeout=timeout_s):
                answer.append(True)
        except OSError:
            answer.append(False)

    # A daemon thread: a lookup that never returns is abandoned, not waited for.
    probe = threading.Thread(target=attempt, name="raw-network-probe", daemon=True)
    probe.start()
    probe.join(timeout_s)
    return bool(answer) and answer[0]


# ---------------------------------------------------------------------------
# Download (pooch)
# ---------------------------------------------------------------------------


@contextmanager
def _open_output(path: str) -> Iterator[IO[bytes]]:
    """The binary file a download is written to (pooch's temporary file in the target folder).

    A separate function so that tests can inject write failures (a full disk).
    """
    with open(path, "wb") as handle:
        yield handle


class _CountingWriter:
    """Passes writes through to ``handle`` and counts the bytes that were written."""

    def __init__(self, handle: IO[bytes]):
        self._handle = handle
        self.written = 0

    def write(self, data: bytes) -> int:
        count = self._handle.write(data)
        self.written += len(data) if count is None else count
        return count

    def flush(self) -> None:
        self._handle.flush()


class _Downloader:
    """A pooch downloader: pooch's own for the URL's protocol, a named progress bar
    (terminal only), and byte counting for the disk-full message."""

    def __init__(self, url: str, label: str, show_progress: bool, timeout_s: float):
        self._label = label
        self._show = show_progress
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme in ("http", "https"):
            self._inner: Any = pooch.HTTPDownloader(timeout=timeout_s)
        else:
            self._inner = pooch.downloaders.choose_downloader(url)  # ValueError if unknown
        self.written = 0

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False):
        if check_only:
            return self._inner(url, output_file, pooch_obj, check_only=True)
        bar = None
        if self._show and isinstance(self._inner, pooch.HTTPDownloader):
            # total=1 until pooch sets the Content-Length (pooch tests the bar's truth);
            # disable=None: no bar when the output is not a terminal (log files, Slurm).
            bar = tqdm(total=1, desc=self._label, unit="B", unit_scale=True, disable=None)
            self._inner.progressbar = bar
        try:
            with _open_output(output_file) as handle:
                writer = _CountingWriter(handle)
                try:
                    self._inner(url, writer, pooch_obj)
                finally:
                    self.written = writer.written
        finally:
            if bar is not None:
                bar.close()
        return None


def download_file(
    urls: Sequence[str],
    target: str | os.PathLike,
    accepted: Sequence[str],
    show_progress: bool = True,
    timeout_s: float = _DOWNLOAD_TIMEOUT_S,
) -> str:
    """Downloads ``target`` from the first of ``urls`` that works, verified before it appears.

    pooch streams each attempt into a temporary file beside ``target``, checks its hash
    against ``accepted[0]`` (the owners' published value; the other accepted values are
    redistributors' repacks, which only local copies carry) and renames it into place only
    when it matches; any failure removes the temporary file. A ``target`` that already
    matches is not downloaded again (pooch's cache).

    Returns:
        The checksum that matched (``"algo:hex"``).

    Raises:
        NoSpaceError: The disk or quota ran out (what ran out, where, how much was
            written, how much is free). Other sources are not tried.
        ChecksumMismatchError: Every source served bytes with another checksum.
        DownloadError: Every source failed otherwise (the reasons, per URL).
    """
    target = Path(target)
    accepted = tuple(normalize_checksum(a) for a in accepted)
    if not accepted:
        raise RawDataError(
            f"Refusing to download {target.name} without a checksum to verify it; add the "
            "published value to the dataset spec or pass checksums= to RawImageDataset."
        )
    if not urls:
        raise DownloadError(f"No download source for {target.name}; place it in {target.parent}/.")
    known = accepted[0]
    remove_stale_partials(target.parent)
    failures: list[str] = []
    mismatches: list[tuple[str, str]] = []  # (url, found)
    for url in urls:
        downloader = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            downloader = _Downloader(url, target.name, show_progress, timeout_s)
            pooch.retrieve(  # logs "Downloading data from <url> to file <target>"
                url, known_hash=known, fname=target.name, path=target.parent, downloader=downloader
            )
            return known
        except OSError as exc:  # requests' errors are OSErrors too
            if exc.errno in _NO_SPACE:
                raise _no_space_error(exc, target, downloader) from exc
            failures.append(f"{url}: {type(exc).__name__}: {str(exc).rstrip('.')}")
        except ValueError as exc:  # pooch: hash mismatch, or an unsupported protocol
            found = _found_hash(str(exc), known)
            if found is None:
                failures.append(f"{url}: {str(exc).rstrip('.')}")
            else:
                mismatches.append((url, found))
    if mismatches and not failures:
        raise _mismatch_error(target, known, mismatches)
    details = [f"{u}: served {f}, expected {known}" for u, f in mismatches] + failures
    raise DownloadError(
        f"Could not download {target.name}: {'; '.join(details)}. Check the network (or a "
        f"proxy) and try again, or place the official file in {target.parent}/ yourself."
    )


def remove_stale_partials(directory: Path, max_idle_s: float = _STALE_PARTIAL_S) -> list[Path]:
    """Removes the temporary files of downloads that were killed (SIGKILL, power loss).

    pooch names a download's temporary file ``tmp`` + 8 characters in the target folder and
    removes it itself on any error it sees; only a killed process leaves one behind. A
    running download writes at least once per read timeout, so a file untouched for
    ``max_idle_s`` (20 read timeouts) belongs to no live download.

    Returns:
        The files removed.
    """
    removed = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for path in directory.iterdir():
        if not _PARTIAL_NAME.match(path.name) or not path.is_file():
            continue
        try:
            if now - path.stat().st_mtime > max_idle_s:
                path.unlink()
                removed.append(path)
                logger.info("Removed %s, left by a download that was killed.", path)
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def _found_hash(message: str, known: str) -> str | None:
    """The hash pooch computed, from its mismatch message (``None``: not a mismatch)."""
    match = re.search(r"expected (\S+) but got (\w+)", message)
    if match is None:
        return None
    return f"{known.split(':')[0]}:{match.group(2)}"


def _mismatch_error(
    target: Path, known: str, mismatches: Sequence[tuple[str, str]]
) -> ChecksumMismatchError:
    found = tuple(f for _, f in mismatches)
    sources = ", ".join(f"{u} served {f}" for u, f in mismatches)
    return ChecksumMismatchError(
        f"Checksum mismatch for the download of {target.name}: expected {known}, but "
        f"{sources}. The download was deleted; nothing was left in {target.parent}/. The "
        "source may serve a changed or damaged file: try again later, or place the official "
        f"file in {target.parent}/ yourself. If you trust this source, pass "
        f"checksums={{'{target.name}': '{found[-1]}'}} to RawImageDataset.",
        path=str(target),
        expected=(known,),
        found=found,
    )


def _no_space_error(exc: OSError, target: Path, downloader: _Downloader | None) -> NoSpaceError:
    what = _NO_SPACE[exc.errno]
    written = downloader.written if downloader is not None else 0
    try:
        free = f"{shutil.disk_usage(target.parent).free / 2**20:.1f} MiB are free there now"
    except OSError:
        free = "its free space could not be read"
    return NoSpaceError(
        f"{what} while downloading {target.name} into {target.parent}/ ({what.lower()} after "
        f"{written / 2**20:.1f} MiB were written; {free}). The partial file was removed. "
        f"Free space on the disk that holds {target.parent}/ (e.g. old versions under "
        "data/), or point the raw_images catalog entry's root at a disk with room, or place "
        "the official file there yourself.",
        directory=str(target.parent),
        code=exc.errno,
    )
