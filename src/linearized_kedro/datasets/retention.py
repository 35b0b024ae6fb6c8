"""Bounded storage: which stored versions and tiles ``kedro gc`` may remove, and integrity scans.

Everything is found on disk (the catalog's paths depend on ``--params``, so it cannot
list every concrete artifact): a *versioned artifact* is a folder ``<name>`` whose
subfolders ``<version>/`` hold a file ``<name>``; a *tile folder* (one Gram computation) is a folder holding ``.leases/``.

Retention rule (per artifact):

- never removed: the newest ``keep_last`` complete versions (at least the latest
  complete one), every version of a *pinned* run (``--keep`` or a line of
  ``data/.pins``), every version of a run that is still running, and every run a kept
  version was computed from (its manifest's ``input_versions``, followed
  transitively) — so a kept result keeps its lineage;
- removed: older complete versions, and incomplete versions (killed or failed runs)
  older than ``grace_s``; leftover ``*.partial`` temporary files older than ``grace_s``;
- Gram tile folders: removed when no live run holds a lease on them and no tile was
  written for ``tile_age_s`` (a killed run's tiles are kept that long so that a rerun
  can resume from them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import fsspec

from linearized_kedro.datasets import gram_blocks
from linearized_kedro.datasets import runs as registry
from linearized_kedro.datasets.atomic import PARTIAL_SUFFIX
from linearized_kedro.datasets.integrity import IntegrityError, verify_file
from linearized_kedro.datasets.metadata import (
    COMMIT_SUFFIX,
    SIDECAR_SUFFIX,
    is_committed,
    read_sidecar,
)

PINS_FILE = ".pins"
_local_fs = fsspec.filesystem("file")


@dataclass(frozen=True)
class Removal:
    """One thing ``kedro gc`` removes: a version folder, a tile folder or a temporary file."""

    path: Path
    reason: str
    size: int


def versioned_artifacts(data_root: Path) -> list[Path]:
    """Every versioned artifact folder under ``data_root`` (the run registry excluded)."""
    found = []
    for folder, subfolders, _ in os.walk(data_root):
        path = Path(folder)
        if path.name == registry.RUNS_DIR.name:
            subfolders[:] = []
            continue
        name = path.name
        if any((path / sub / name).is_file() for sub in subfolders):
            found.append(path)
            subfolders[:] = []  # version folders hold no further artifacts
    return sorted(found)


def versions_of(artifact: Path) -> list[str]:
    """The version folders of an artifact, newest first (folders without the file too)."""
    return sorted((p.name for p in artifact.iterdir() if p.is_dir()), reverse=True)


def read_pins(data_root: Path) -> set[str]:
    """The versions listed in ``<data_root>/.pins``: one per line, as ``version`` or
    ``dataset:version`` (the ``--load-versions`` syntax); ``#`` starts a comment."""
    path = Path(data_root) / PINS_FILE
    if not path.is_file():
        return set()
    pins = set()
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            pins.add(entry.rsplit(":", 1)[-1])  # `dataset:version` as in --load-versions
    return pins


def _lineage(runs_dir: Path, kept: set[str]) -> set[str]:
    """``kept`` plus every run that a kept run read its inputs from (transitively)."""
    closure = set(kept)
    todo = list(kept)
    while todo:
        manifest = registry.read_manifest(runs_dir / todo.pop())
        for version in (manifest.get("input_versions") or {}).values():
            if version and version not in closure:
                closure.add(version)
                todo.append(version)
    return closure


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*")]
    return max(times)


def plan_gc(
    data_root: Path,
    *,
    keep_last: int = 3,
    keep: Iterable[str] = (),
    grace_s: float = 24 * 3600.0,
    tile_age_s: float = 7 * 24 * 3600.0,
    now: float | None = None,
) -> list[Removal]:
    """What ``kedro gc`` would remove under ``data_root`` (see the module docstring)."""
    data_root = Path(data_root)
    now = time.time() if now is None else now
    runs_dir = data_root / registry.RUNS_DIR.name
    live = {r["run_id"] for r in registry.list_runs(runs_dir) if r["status"] == "running"}
    pins = set(keep) | read_pins(data_root)
    per_artifact: dict[Path, tuple[list[str], list[str]]] = {}
    kept_runs = set(pins) | live
    for artifact in versioned_artifacts(data_root):
        versions = versions_of(artifact)
        complete = [
            v for v in versions if is_committed(_local_fs, str(artifact / v / artifact.name))
        ]
        per_artifact[artifact] = (versions, complete)
        kept_runs.update(complete[: max(1, int(keep_last))])
    protected = _lineage(runs_dir, kept_runs)

    removals = []
    for artifact, (versions, complete) in per_artifact.items():
        for version in versions:
            folder = artifact / version
            if version in protected:
                removals.extend(_stale_partials(folder, now, grace_s))
                continue
            if version in complete:
                reason = f"complete, older than the newest {max(1, int(keep_last))} kept"
            elif now - _newest_mtime(folder) < grace_s:
                continue
            else:
                reason = "incomplete: its run was killed or failed"
            removals.append(Removal(folder, reason, _size(folder)))
    for leases in sorted(data_root.rglob(gram_blocks.LEASES)):
        folder = leases.parent
        if leases.is_dir():
            if gram_blocks.live_leases(folder):
                continue
            if now - _newest_mtime(folder) < tile_age_s:
                continue
            removals.append(Removal(folder, "Gram tiles no live run uses", _size(folder)))
    return removals


def _stale_partials(folder: Path, now: float, grace_s: float) -> list[Removal]:
    return [
        Removal(p, "temporary file of an interrupted save", p.stat().st_size)
        for p in folder.glob(f"*{PARTIAL_SUFFIX}")
        if now - p.stat().st_mtime >= grace_s
    ]


def apply_gc(removals: Iterable[Removal]) -> int:
    """Removes what :func:`plan_gc` planned; returns the bytes freed (hard links: names)."""
    freed = 0
    for item in removals:
        if "Gram tiles" in item.reason:
            with gram_blocks.root_lock(item.path.parent):
                if not gram_blocks.remove_unleased(item.path):
                    continue
        elif item.path.is_dir():
            shutil.rmtree(item.path)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.size
    return freed


@dataclass(frozen=True)
class Finding:
    """One stored file that failed verification (or could not be checked)."""

    path: Path
    problem: str


def verify_all(data_root: Path) -> tuple[int, list[Finding]]:
    """Checks every stored version of every artifact against its sidecar.

    Returns:
        (number of files checked, problems found).
    """
    checked = 0
    findings = []
    for artifact in versioned_artifacts(Path(data_root)):
        for version in versions_of(artifact):
            path = artifact / version / artifact.name
            if not path.is_file():
                continue
            try:
                sidecar = read_sidecar(str(path), _local_fs)
            except (FileNotFoundError, ValueError) as exc:
                findings.append(Finding(path, f"no readable sidecar ({exc})"))
                continue
            try:
                verify_file(_local_fs, str(path), sidecar.get("artifact", {}))
            except IntegrityError as exc:
                findings.append(Finding(path, str(exc).split(". ", 1)[0]))
            checked += 1
    return checked, findings


__all__ = [
    "COMMIT_SUFFIX",
    "SIDECAR_SUFFIX",
    "Finding",
    "Removal",
    "apply_gc",
    "plan_gc",
    "read_pins",
    "verify_all",
    "versioned_artifacts",
]
