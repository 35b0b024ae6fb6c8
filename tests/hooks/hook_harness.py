"""A tiny two-pipeline project for the run hooks, run as ``KedroSession.run`` runs it.

``up`` makes two artifacts that belong together (``a``, ``b``); ``down`` reads both.
:func:`run` calls the same hooks in the same order as a session: before_pipeline_run,
the runner (node and dataset hooks), then after_pipeline_run or on_pipeline_error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import Version, generate_timestamp
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

from linearized_kedro.datasets import NumpyDataset
from linearized_kedro.hooks import ProvenanceHook, RunsHook


class Crash(Exception):
    """A node failing mid-pipeline."""


def make_a(value: float) -> np.ndarray:
    return np.full(3, float(value))


def make_b(a: np.ndarray, fail: bool) -> np.ndarray:
    if fail:
        raise Crash("make_b failed after a was saved")
    return a * 2


def use_a(a: np.ndarray, on_load: Any) -> np.ndarray:
    if callable(on_load):
        on_load()
    return a


def use_b(a_seen: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a_seen, b])


UP = Pipeline(
    [
        Node(make_a, "params:value", "a", name="make_a"),
        Node(make_b, ["a", "params:fail"], "b", name="make_b"),
    ]
)
DOWN = Pipeline(
    [
        Node(use_a, ["a", "params:on_load"], "a_seen", name="use_a"),
        Node(use_b, ["a_seen", "b"], "c", name="use_b"),
    ]
)
PIPELINES = {"up": UP, "down": DOWN}


def catalog(
    root: Path, *, load: dict[str, str] | None = None, save: str | None = None, **params: Any
) -> DataCatalog:
    """Versioned artifacts ``a``, ``b``, ``c`` under ``root`` plus parameters.

    Like a session's catalog: ``load`` are the ``--load-versions`` pins, ``save`` the
    session's save version.
    """
    load = load or {}
    datasets = {
        name: NumpyDataset(
            filepath=str(root / f"{name}.npy"), version=Version(load.get(name), save)
        )
        for name in ("a", "b", "c")
    }
    values = {"value": 1.0, "fail": False, "on_load": None, **params}
    datasets.update({f"params:{k}": MemoryDataset(v) for k, v in values.items()})
    datasets["parameters"] = MemoryDataset({"seed": 42, "model": "mlp", "data": {"dataset": "toy"}})
    return DataCatalog(datasets=datasets)


def run(
    root: Path,
    pipeline: Pipeline,
    *,
    hooks: tuple = (),
    load_versions: dict[str, str] | None = None,
    session_id: str | None = None,
    **params: Any,
) -> tuple[str, DataCatalog]:
    """Runs ``pipeline`` with ``hooks`` like a Kedro session; returns (session id, catalog)."""
    manager = _create_hook_manager()
    for hook in hooks:
        manager.register(hook)
    session_id = session_id or generate_timestamp()
    data_catalog = catalog(root, load=load_versions, save=session_id, **params)
    run_params = {
        "run_id": session_id,
        "project_path": str(root),
        "env": "test",
        "pipeline_names": ["test"],
        "runtime_params": {},
        "load_versions": load_versions or {},
    }
    manager.hook.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=data_catalog)
    try:
        result = SequentialRunner().run(pipeline, data_catalog, manager, run_id=session_id)
    except Exception as error:
        manager.hook.on_pipeline_error(
            error=error, run_params=run_params, pipeline=pipeline, catalog=data_catalog
        )
        raise
    manager.hook.after_pipeline_run(
        run_params=run_params, run_result=result, pipeline=pipeline, catalog=data_catalog
    )
    return session_id, data_catalog


def project_hooks(root: Path) -> tuple:
    """The project's run and provenance hooks, on the toy pipelines."""
    return (RunsHook(registry_dir=str(root / ".runs"), pipelines=PIPELINES), ProvenanceHook())


def versions(root: Path, name: str) -> list[str]:
    """Stored versions of artifact ``name``, oldest first."""
    folder = root / f"{name}.npy"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
