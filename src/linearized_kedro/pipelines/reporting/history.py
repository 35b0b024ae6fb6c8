"""Results accumulated across the runs of one setting: every saved version of a dataset.

Each run of an experiment saves a new version of its results (Kedro's versioned layout
``<file>/<version>/<file>``), and a run may cover only some tasks (``--params
label_idx=10``). Reading the latest version alone would make the summary shrink to that
one task. So the summary reads, besides the version a run resolves to (the latest, or a
``--load-versions`` pin), every saved version of the same dataset: the catalog's
``<artifact>_history`` entries, a ``PartitionedDataset`` over the version folders
(partition id ``<version>/<file stem>``, one lazy loader each). This module merges them:

- the **reference** is the version the run resolved (``artifact_versions``), else the newest;
- only versions not newer than the reference whose run **settings** equal the reference's
  take part (:data:`SETTINGS`: model, dataset, sizes, optimiser, epochs, seed, k); a version
  whose rows disagree with the reference on a shared task's eigenvalue comes from another
  spectrum and is left out too;
- per task (task value × kind) the newest version's row wins, and every row keeps the
  version it comes from (column :data:`VERSION`).

Versions that are left out are counted, so the summary can say that they exist.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from linearized_kedro.experiments import results

logger = logging.getLogger(__name__)

VERSION = "version"
"""Column of an accumulated table: the version each row was read from."""

SETTINGS = (
    "experiment",
    "dataset",
    "model",
    "activation",
    "num_train",
    "num_test",
    "epochs",
    "batch_size",
    "optimizer",
    "lr_schedule",
    "max_lr",
    "momentum",
    "num_eigvecs",
    "seed",
)
"""Result columns that identify a run's settings (``num_train`` is the task axis of
CIFAR-2 and is then not a setting)."""

ALIGNMENT_TASK_KEYS = ("indices",)
"""Alignment settings that say which tasks a run covered, not how it was made."""


@dataclass
class Accumulated:
    """A result merged over the versions of one setting.

    Attributes:
        data: the merged table (with a :data:`VERSION` column) or alignment dict.
        reference: the version the settings were taken from (``None``: unversioned).
        used: version → number of rows (tables) or runs (alignment) it contributed.
        other_settings: versions (not newer than the reference) with other settings.
        unreadable: versions that could not be read or conformed (written by older code).
    """

    data: Any
    reference: str | None
    used: dict[str, int] = field(default_factory=dict)
    other_settings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def versions_of(history: Mapping[str, Any] | None, stem: str) -> dict[str, Callable[[], Any]]:
    """Version → loader from a ``PartitionedDataset`` over a versioned dataset's folder.

    Args:
        history: partition id (``<version>/<file stem>``) → loader or loaded data.
        stem: the file name without its suffix (``eigen_training_results``); other files
            in the version folders (provenance sidecars) are ignored.
    """
    out = {}
    for partition, loader in (history or {}).items():
        version, _, name = str(partition).replace("\\", "/").partition("/")
        if name == stem:
            out[version] = loader if callable(loader) else (lambda data=loader: data)
    return out


def _latest_and_reference(
    versions: Mapping[str, Callable[[], Any]], latest: Any, reference: str | None
) -> tuple[Any, str | None]:
    """The run's own result and its version; the newest stored version stands in for either.

    ``latest`` is ``None`` when the run resolved nothing: the newest stored version (if any)
    is loaded instead, and is also the reference.
    """
    if latest is None:
        if not versions:
            return None, None
        reference = max(versions)
        return versions[reference](), reference
    if reference is None and versions:
        reference = max(versions)
    return latest, reference


def _settings_columns(table: pd.DataFrame) -> list[str]:
    columns = [c for c in SETTINGS if c in table.columns]
    if "task_axis" in table and (table["task_axis"].astype(str) == "num_train").any():
        columns.remove("num_train")
    return columns


def _settings(table: pd.DataFrame, columns: list[str]) -> set[tuple]:
    """The distinct settings tuples of a table (NaN/NA made comparable)."""

    def norm(value: Any) -> Any:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, np.generic):
            return value.item()
        return value

    return {tuple(norm(v) for v in row) for row in table[columns].itertuples(index=False)}


def _same_eigenvalues(table: pd.DataFrame, reference: pd.DataFrame) -> bool:
    """Shared tasks have the same eigenvalue (NaN where a task has none)."""
    key = ["task_value", "kind"]
    merged = table[[*key, "eigenvalue"]].merge(
        reference[[*key, "eigenvalue"]], on=key, suffixes=("", "_ref")
    )
    a, b = merged["eigenvalue"].to_numpy(float), merged["eigenvalue_ref"].to_numpy(float)
    return bool(np.all(np.isclose(a, b, rtol=1e-6) | (np.isnan(a) & np.isnan(b))))


def accumulate_table(
    latest: pd.DataFrame | None,
    history: Mapping[str, Any] | None,
    stem: str,
    reference: str | None,
) -> Accumulated | None:
    """One results table from every version of the reference's settings.

    Args:
        latest: the table the run resolved (latest or pinned); ``None`` if none exists.
        history: the ``<artifact>_history`` partitions (``None``: not configured/empty).
        stem: the results file's stem, e.g. ``eigen_training_results``.
        reference: the version of ``latest`` (``artifact_versions``), or ``None``.

    Returns:
        The merged table in the results schema plus :data:`VERSION`, sorted by task, or
        ``None`` when there is no table at all.
    """
    versions = versions_of(history, stem)
    latest, reference = _latest_and_reference(versions, latest, reference)
    if latest is None:
        return None
    reference_table = results.conform(latest)
    columns = _settings_columns(reference_table)
    wanted = _settings(reference_table, columns)
    out = Accumulated(data=None, reference=reference)
    tables = [(reference or "", reference_table)]
    for version in sorted(versions, reverse=True):
        if reference is not None and version >= reference:
            continue  # the reference itself, or newer than a pinned version
        try:
            table = results.conform(versions[version]())
        except Exception as exc:  # an older schema, or a damaged file: say so, skip it
            logger.warning("Results version %s of %s left out: %s", version, stem, exc)
            out.unreadable.append(version)
            continue
        if _settings(table, columns) != wanted or not _same_eigenvalues(table, reference_table):
            out.other_settings.append(version)
            continue
        tables.append((version, table))
    rows, seen = [], set()
    for version, table in tables:  # newest first: the first row of a task wins
        for row in table.to_dict("records"):
            key = (row["task_value"], row["kind"])
            if key in seen:
                continue
            seen.add(key)
            rows.append({**row, VERSION: version or None})
            out.used[version] = out.used.get(version, 0) + 1
    merged = results.results_table([{k: v for k, v in r.items() if k != VERSION} for r in rows])
    order = {(r["task_value"], r["kind"]): r[VERSION] for r in rows}
    keys = zip(merged["task_value"], merged["kind"], strict=True)
    merged[VERSION] = [order[key] for key in keys]
    out.data = merged
    return out


def _alignment_settings(alignment: Mapping[str, Any]) -> tuple[dict, list]:
    settings = {
        k: v for k, v in (alignment.get("settings") or {}).items() if k not in ALIGNMENT_TASK_KEYS
    }
    return settings, list(alignment.get("eigenvalues") or [])


def accumulate_alignment(
    latest: Mapping[str, Any] | None,
    history: Mapping[str, Any] | None,
    stem: str,
    reference: str | None,
) -> Accumulated | None:
    """One alignment artifact from every version with the reference's settings and spectrum.

    Args:
        latest: the alignment dict the run resolved (``{"eigenvalues", "runs", "settings"}``).
        history, stem, reference: as for :func:`accumulate_table`.

    Returns:
        The merged dict (``runs`` of every compatible version, the newest per index; each
        run gets a ``"version"`` key), or ``None`` when there is none.
    """
    versions = versions_of(history, stem)
    latest, reference = _latest_and_reference(versions, latest, reference)
    if latest is None:
        return None
    wanted = _alignment_settings(latest)
    out = Accumulated(data=None, reference=reference)
    sources = [(reference or "", latest)]
    for version in sorted(versions, reverse=True):
        if reference is not None and version >= reference:
            continue
        try:
            candidate = versions[version]()
            same = _alignment_settings(candidate) == wanted
        except Exception as exc:
            logger.warning("Alignment version %s of %s left out: %s", version, stem, exc)
            out.unreadable.append(version)
            continue
        if not same:
            out.other_settings.append(version)
            continue
        sources.append((version, candidate))
    runs: dict[str, Any] = {}
    for version, source in sources:
        for j, run in (source.get("runs") or {}).items():
            if j not in runs:
                runs[j] = {**run, VERSION: version or None}
                out.used[version] = out.used.get(version, 0) + 1
    ordered = dict(sorted(runs.items(), key=lambda item: int(item[0])))
    settings = dict(latest.get("settings") or {})
    settings["indices"] = [int(j) for j in ordered]
    out.data = {**latest, "runs": ordered, "settings": settings}
    return out
