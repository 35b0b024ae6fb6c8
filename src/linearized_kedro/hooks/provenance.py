"""Provenance: every sidecar records which run, node, settings and inputs produced the artifact.

The first wave handed the settings to the datasets through a module global set in
``before_pipeline_run``: under ``--runner ParallelRunner`` nodes run in worker
processes that never saw it, and every sidecar recorded ``None``. Here everything
travels with the catalog, which Kedro hands to the node hooks in whichever process
runs the node: ``before_node_run`` notes the node's catalog, and
``before_dataset_saved`` gives the dataset about to be saved its provenance record
(:meth:`~linearized_kedro.datasets.base.ArtifactDataset.set_provenance`), which the
dataset writes into the sidecar together with the artifact's checksum — one file,
written before the artifact is published.

The record: the run id (the artifact's version) and Kedro session id, the dataset and
node names, the node's pipeline, the versions of the node's versioned inputs (its
lineage), the ``params:`` it read, the run's settings (model, model config, dataset,
seed, NAD and runtime settings), the environment, the requested pipelines and
``--params``/``--load-versions``, library versions and git commit.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kedro.framework.hooks import hook_impl

from linearized_kedro.hooks.runs import run_plan

logger = logging.getLogger(__name__)

_PLAN_KEYS = (
    "run_id",
    "session_id",
    "env",
    "pipeline_names",
    "runtime_params",
    "load_versions",
    "git_commit",
    "library_versions",
)


def provenance_record(plan: dict[str, Any] | None, node, catalog, dataset_name: str) -> dict:
    """The provenance of ``dataset_name`` as saved by ``node`` in the run of ``plan``."""
    plan = plan or {}
    inputs: dict[str, str | None] = {}
    params: dict[str, Any] = {}
    for name in node.inputs:
        if name.startswith("params:"):
            try:
                params[name[len("params:") :]] = catalog.get(name).load()
            except Exception:  # a parameter that cannot be read is not worth failing a save
                params[name[len("params:") :]] = None
            continue
        dataset = catalog.get(name)
        if hasattr(dataset, "resolve_load_version") and getattr(dataset, "_version", None):
            try:
                inputs[name] = dataset.resolve_load_version()
            except Exception:
                inputs[name] = None
    return {
        **(plan.get("settings") or {}),
        **{key: plan.get(key) for key in _PLAN_KEYS if key in plan},
        "dataset_name": dataset_name,
        "node": node.name,
        "namespace": node.namespace,
        "pipeline": (plan.get("node_home") or {}).get(node.name),
        "inputs": inputs,
        "params": params,
    }


class ProvenanceHook:
    """Hands each project dataset its provenance just before the catalog saves it."""

    def __init__(self) -> None:
        self._catalogs: dict[str, Any] = {}
        self._lock = threading.Lock()  # ThreadRunner runs nodes concurrently

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        # Kept per node name until the next run of that name: the node's outputs are
        # saved after `after_node_run`, so there is no later point to drop it.
        with self._lock:
            self._catalogs[node.name] = catalog

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        with self._lock:
            catalog = self._catalogs.get(node.name)
        if catalog is None:
            return
        dataset = catalog.get(dataset_name)
        if not hasattr(dataset, "set_provenance"):
            return
        dataset.set_provenance(provenance_record(run_plan(catalog), node, catalog, dataset_name))


# The first wave's name (settings.py registers it).
RunMetadataHook = ProvenanceHook
