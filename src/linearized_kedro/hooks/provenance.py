"""Provenance: every sidecar records which run, node, settings and inputs produced the artifact.

The first wave handed the settings to the datasets through a module global set in
``before_pipeline_run``: under ``--runner ParallelRunner`` nodes run in worker
processes that never saw it, and every sidecar recorded ``None``. (Kedro does not
even run project hooks in spawned workers on Linux: it bootstraps a worker only when
the *default* start method is ``spawn``.) So the whole record is computed in
``before_pipeline_run``, in the main process, where everything is known: the run
(:class:`~linearized_kedro.hooks.runs.RunsHook` ran first and pinned the inputs), the
node that saves each artifact, that node's inputs and their versions, and the
parameters. Each project dataset keeps its record
(:meth:`~linearized_kedro.datasets.base.ArtifactDataset.set_provenance`) and travels
with the catalog to whichever process saves it, where it is written into the sidecar
together with the artifact's checksum, before the artifact is published.

The record: the run id (the artifact's version) and Kedro session id, the dataset and
node names, the node's pipeline, the versions of the node's versioned inputs (its
lineage), the ``params:`` it read, the run's settings (model, model config, dataset,
seed, NAD and runtime settings), the environment, the requested pipelines,
``--params`` and ``--load-versions``, library versions and git commit.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from linearized_kedro.command import pipeline_names
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


def provenance_record(
    plan: dict[str, Any] | None,
    node,
    catalog,
    dataset_name: str,
    produced_in_run: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """The provenance of ``dataset_name`` as ``node`` will save it in the run of ``plan``.

    Args:
        plan: The run plan of :class:`~linearized_kedro.hooks.runs.RunsHook` (``None``
            outside such a run).
        node: The node that outputs ``dataset_name``.
        catalog: The run's catalog (parameters; input datasets and their versions).
        dataset_name: The artifact's catalog name.
        produced_in_run: Datasets this run produces (their version is the run id).
    """
    plan = plan or {}
    inputs: dict[str, str | None] = {}
    params: dict[str, Any] = {}
    for name in node.inputs:
        if name.startswith("params:"):
            try:
                params[name[len("params:") :]] = catalog.get(name).load()
            except Exception:  # a parameter that cannot be read is not worth failing a run
                params[name[len("params:") :]] = None
            continue
        dataset = catalog.get(name)
        if getattr(dataset, "_version", None) is None:
            continue  # unversioned (raw files, memory, tiles)
        if name in produced_in_run:
            inputs[name] = plan.get("run_id")
            continue
        try:
            inputs[name] = dataset.resolve_load_version()
        except Exception:  # missing upstream: the run will fail with a clearer message
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
    """Gives every project dataset of the run its provenance record before the first node."""

    # Last: after RunsHook has claimed the run and pinned its inputs.
    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        plan = run_plan(catalog)
        if plan is None:  # no RunsHook: still record what the run knows
            plan = {
                "session_id": run_params.get("run_id"),
                "env": run_params.get("env"),
                "pipeline_names": pipeline_names(run_params),
                "runtime_params": run_params.get("runtime_params"),
                "load_versions": run_params.get("load_versions"),
            }
        produced = set(pipeline.all_outputs())
        for node in pipeline.nodes:
            for output in node.outputs:
                dataset = catalog.get(output)
                if hasattr(dataset, "set_provenance"):
                    dataset.set_provenance(provenance_record(plan, node, catalog, output, produced))


# The first wave's name (settings.py registered it).
RunMetadataHook = ProvenanceHook
