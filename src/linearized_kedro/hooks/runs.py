"""Runs commit as a unit: downstream only ever sees complete runs, never a mix.

One ``kedro run`` is one *run*; its id is its save version (every artifact it writes
lands in ``<file>/<run id>/<file>``), claimed uniquely in ``data/.runs`` (see
:mod:`linearized_kedro.datasets.runs`). :class:`RunsHook`:

1. **Before the first node** (``before_pipeline_run``, after parameter validation and
   before the other hooks look at the catalog; see ``settings.py``): claims
   the run id and binds every dataset of the run to it; checks ``--load-versions``
   pins (a version that does not exist is an error listing those that do); resolves
   the version of every input the run does not produce itself *once, per upstream
   pipeline*: all inputs that one registered pipeline produced are read from the
   newest run of that pipeline that is complete for all of them, and pinned for the
   whole run (so a run committed meanwhile by another process cannot slip in
   between two nodes). If no such run exists — say ``eigenvalues`` comes from one run
   and ``eigenvectors`` only from another — the run is refused with a message naming
   both runs, unless the user pinned them explicitly with ``--load-versions``.
2. **After each save** (``after_dataset_saved``, in whichever process ran the node,
   so ``ParallelRunner`` works): once every versioned output of the node's *pipeline*
   (the smallest registered pipeline that contains it, e.g. ``data`` or
   ``ntk_spectrum``) is stored for this run, those artifacts are committed together
   (a ``<file>.commit.json`` marker beside each). The commit unit is the pipeline,
   not the node — a node's outputs alone can disagree with its siblings' (a new θ0
   with the previous run's eigenvectors) — and not the whole run, so a finished
   spectrum survives a later failure of ``eigen_training`` in the same command.
3. **After the run** (``after_pipeline_run`` / ``on_pipeline_error``): commits
   whatever complete pipelines remain (e.g. with ``--only-missing-outputs``), marks
   the run ``complete`` or ``failed`` and releases its lock. A SIGKILL skips this:
   the run stays uncommitted and its artifacts are invisible to "latest".
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import AbstractVersionedDataset, DatasetError

from linearized_kedro.command import pipeline_names
from linearized_kedro.datasets import runs as registry
from linearized_kedro.datasets.metadata import code_provenance, json_ready

logger = logging.getLogger(__name__)

# The catalog entry (a MemoryDataset, pickled to ParallelRunner's workers like the
# parameters) that carries the run's plan to the node hooks in any process.
RUN_PLAN = "_linearized_kedro_run"


class MixedRunsError(DatasetError):
    """The inputs a run needs from one upstream pipeline exist only in different runs."""


class MissingVersionError(DatasetError):
    """A ``--load-versions`` pin names a version that does not exist."""


def run_plan(catalog) -> dict[str, Any] | None:
    """The plan :class:`RunsHook` stored in the catalog, or ``None`` outside such a run."""
    try:
        if RUN_PLAN not in catalog:
            return None
        return catalog.get(RUN_PLAN).load()
    except (DatasetError, AttributeError, KeyError):
        return None


def package_pipelines() -> dict[str, Any]:
    """One pipeline per pipeline package, whatever ``--pipelines`` requested."""
    from kedro.framework.project import PACKAGE_NAME, pipelines

    if PACKAGE_NAME:
        try:
            registry_module = importlib.import_module(f"{PACKAGE_NAME}.pipeline_registry")
            found = getattr(registry_module, "all_pipelines", None)
            if callable(found):
                return dict(found())
        except ImportError:
            pass
    try:
        return {name: p for name, p in pipelines.items() if name != "__default__"}
    except Exception:  # no project configured (e.g. a bare runner in a test)
        return {}


def _smallest(candidates: list[tuple[int, str]]) -> str | None:
    return min(candidates)[1] if candidates else None


def node_homes(pipeline, pipelines: dict[str, Any]) -> dict[str, str]:
    """Each node of ``pipeline`` → the smallest registered pipeline that contains it."""
    sizes = {name: len(p.nodes) for name, p in pipelines.items()}
    members = {name: {n.name for n in p.nodes} for name, p in pipelines.items()}
    homes = {}
    for node in pipeline.nodes:
        found = [(sizes[name], name) for name in pipelines if node.name in members[name]]
        homes[node.name] = _smallest(found) or "__run__"
    return homes


def dataset_producers(pipelines: dict[str, Any]) -> dict[str, str]:
    """Each dataset → the smallest registered pipeline that outputs it."""
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, p in pipelines.items():
        for output in p.all_outputs():
            found[output].append((len(p.nodes), name))
    return {output: _smallest(candidates) for output, candidates in found.items()}


def _is_artifact(dataset: Any) -> bool:
    return hasattr(dataset, "commit") and hasattr(dataset, "bind_run")


def resolve_input_versions(
    inputs: dict[str, Any], producers: dict[str, str | None]
) -> dict[str, str]:
    """One upstream run per upstream pipeline for the versioned inputs of a run.

    Args:
        inputs: Name → dataset (``ArtifactDataset``) of every versioned input that the
            run does not produce itself.
        producers: Name → the registered pipeline that produces it.

    Returns:
        Name → version to load, for every input that has a complete version.

    Raises:
        MixedRunsError: The inputs of one pipeline have no complete run in common
            (and were not all pinned explicitly).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(inputs):
        groups[producers.get(name) or f"<{name}>"].append(name)
    chosen: dict[str, str] = {}
    problems = []
    for group, names in groups.items():
        pinned = {n: inputs[n].pinned_version for n in names if inputs[n].pinned_version}
        available = {n: inputs[n].committed_versions() for n in names if n not in pinned}
        available = {n: v for n, v in available.items() if v}  # missing: reported elsewhere
        if not available:
            continue
        if pinned:
            targets = sorted(set(pinned.values()))
            lacking = [n for n, v in available.items() if targets[-1] not in v]
            if len(targets) == 1 and not lacking:
                chosen.update({n: targets[0] for n in available})
                continue
            problems.append(
                f"- pipeline {group!r}: {_list(pinned)} pinned with --load-versions, but "
                f"{', '.join(sorted(available))} {'are' if len(available) > 1 else 'is'} not "
                f"pinned and has no complete version {targets[-1]}; pin "
                f"{'them' if len(available) > 1 else 'it'} too ({_pins(available, targets[-1])})."
            )
            continue
        common = set.intersection(*(set(v) for v in available.values()))
        if common:
            target = max(common)
            chosen.update({n: target for n in available})
            newest = {n: v[0] for n, v in available.items() if v[0] != target}
            if newest:
                logger.info(
                    "Reading %s from run %s, the newest run complete for all of them "
                    "(newer partial runs: %s).",
                    ", ".join(available),
                    target,
                    _list(newest),
                )
            continue
        latest = {n: v[0] for n, v in available.items()}
        problems.append(
            f"- pipeline {group!r}: no run is complete for all of {', '.join(available)}; "
            f"their latest complete runs are {_list(latest)}. Rerun that pipeline "
            f"(`kedro run --pipelines {group}` with the same --params), or choose runs "
            f"explicitly with --load-versions {_pins(latest)}."
        )
    if problems:
        raise MixedRunsError(
            "Refusing to mix artifacts of different runs (their results would not belong "
            "together):\n" + "\n".join(problems)
        )
    return chosen


def _list(versions: dict[str, str]) -> str:
    return ", ".join(f"{n} → {v}" for n, v in versions.items())


def _pins(names, version: str | None = None) -> str:
    if isinstance(names, dict) and version is None:
        return ",".join(f"{n}:{v}" for n, v in names.items())
    return ",".join(f"{n}:{version}" for n in names)


def check_pins(datasets: dict[str, Any], load_versions: dict[str, str]) -> None:
    """Every ``--load-versions`` pin names an existing version.

    Raises:
        MissingVersionError: Listing, for each bad pin, the versions that exist.
    """
    problems = []
    for name, version in sorted((load_versions or {}).items()):
        dataset = datasets.get(name)
        if not isinstance(dataset, AbstractVersionedDataset):
            continue
        try:
            path = dataset._get_versioned_path(version)
            exists = dataset._exists_function(str(path))
        except DatasetError as exc:
            problems.append(f"- {name}:{version}: {exc}")
            continue
        if exists:
            continue
        listing = (
            dataset.describe_versions()
            if hasattr(dataset, "describe_versions")
            else ", ".join(dataset.list_versions(full_path=False)[:8]) or "none stored"
        )
        problems.append(f"- {name}:{version}: no such version; {listing}.")
    if problems:
        raise MissingVersionError(
            "--load-versions names versions that do not exist:\n"
            + "\n".join(problems)
            + "\nPin one of the versions listed (complete ones belong to finished runs)."
        )


class RunsHook:
    """Gives each run a unique id, pins its inputs to complete upstream runs, commits its outputs.

    Args:
        registry_dir: The run registry (default ``<project>/data/.runs``).
        pipelines: Registered pipelines by name (default: every pipeline package).
    """

    def __init__(self, registry_dir: str | None = None, pipelines: dict | None = None) -> None:
        self._registry_dir = registry_dir
        self._pipelines = pipelines
        self._lock: registry.RunLock | None = None
        self._run_dir: Path | None = None
        self._catalogs: dict[str, Any] = {}
        self._nodes_lock = threading.Lock()  # ThreadRunner runs nodes concurrently

    @hook_impl(specname="before_pipeline_run", wrapper=True)
    def _refused_before_the_first_node(self, run_params, pipeline, catalog):
        """Marks the run ``refused`` when a later check (validation, upstream) stops it.

        Kedro calls no ``on_pipeline_error`` for errors raised before the first node.
        """
        self._release()
        try:
            return (yield)
        except BaseException as exc:
            self._finish("refused", error=f"{type(exc).__name__}: {exc}"[:2000])
            raise

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._release()
        project = Path(run_params.get("project_path") or ".")
        folder = Path(self._registry_dir) if self._registry_dir else registry.runs_dir(project)
        session_id = str(run_params.get("run_id") or run_params.get("session_id"))
        run_id = registry.claim_run_id(folder, session_id)
        self._run_dir = folder / run_id
        self._lock = registry.RunLock(self._run_dir)
        if run_id != session_id:
            logger.info("Run id %s (session %s was taken by another run).", run_id, session_id)

        datasets = {}
        for name in sorted(pipeline.datasets()):
            dataset = catalog.get(name)
            if dataset is not None and not name.startswith("params:") and name != "parameters":
                datasets[name] = dataset
        load_versions = dict(run_params.get("load_versions") or {})
        pinned = {n: catalog.get(n) for n in load_versions if catalog.get(n) is not None}
        check_pins({**datasets, **pinned}, load_versions)
        for dataset in datasets.values():
            if hasattr(dataset, "bind_run"):
                dataset.bind_run(run_id)
        pipelines = self._pipelines if self._pipelines is not None else package_pipelines()
        produced = pipeline.all_outputs()
        external = {
            name: ds
            for name, ds in datasets.items()
            if name not in produced and _is_artifact(ds) and ds._version is not None
        }
        versions = resolve_input_versions(external, dataset_producers(pipelines))
        for name, version in versions.items():
            datasets[name].bind_run(run_id, load_version=version)

        homes = node_homes(pipeline, pipelines)
        groups: dict[str, list[str]] = defaultdict(list)
        for node in pipeline.nodes:
            for output in node.outputs:
                dataset = datasets.get(output)
                if _is_artifact(dataset) and dataset._version is not None:
                    groups[homes[node.name]].append(output)
        plan = {
            "run_id": run_id,
            "session_id": session_id,
            "run_dir": str(self._run_dir),
            "env": run_params.get("env"),
            "pipeline_names": pipeline_names(run_params),
            "runtime_params": run_params.get("runtime_params") or {},
            "load_versions": load_versions,
            "input_versions": versions,
            "node_home": homes,
            "commit_groups": {p: sorted(set(names)) for p, names in groups.items()},
            "settings": _run_settings(catalog),
            **code_provenance(),
        }
        plan = json_ready(plan)
        catalog[RUN_PLAN] = plan
        registry.write_manifest(
            self._run_dir,
            {
                **plan,
                "status": "running",
                "started": time.time(),
                "tags": run_params.get("tags"),
                "node_names": run_params.get("node_names"),
            },
        )

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        # Outputs are saved after `after_node_run`; the commit check runs after each
        # save, which has no catalog argument, so the node's catalog is noted here.
        with self._nodes_lock:
            self._catalogs[node.name] = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        with self._nodes_lock:
            catalog = self._catalogs.get(node.name)
        plan = run_plan(catalog) if catalog is not None else None
        if plan is not None and dataset_name in plan["commit_groups"].get(
            plan["node_home"].get(node.name, ""), []
        ):
            commit_pipeline(plan, catalog, plan["node_home"].get(node.name))

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._commit_stored_pipelines(catalog)
        self._finish("complete")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._commit_stored_pipelines(catalog)
        self._finish("failed", error=f"{type(error).__name__}: {error}"[:2000])

    def _commit_stored_pipelines(self, catalog) -> None:
        """Commits every pipeline of the run whose artifacts are all stored (also when
        another pipeline of the run failed)."""
        plan = run_plan(catalog)
        if plan is not None:
            for group in plan["commit_groups"]:
                commit_pipeline(plan, catalog, group)

    def _finish(self, status: str, **extra: Any) -> None:
        if self._run_dir is not None:
            try:
                registry.update_manifest(self._run_dir, status=status, ended=time.time(), **extra)
            except OSError as exc:  # e.g. the disk is full: the lock still tells the truth
                logger.warning("Could not record the run's end in %s: %s", self._run_dir, exc)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
        self._lock = None
        self._run_dir = None


def commit_pipeline(plan: dict[str, Any], catalog, group: str | None) -> bool:
    """Commits the artifacts of pipeline ``group`` in this run if all of them are stored.

    Returns:
        Whether the pipeline's artifacts are (now) committed.
    """
    names = plan["commit_groups"].get(group or "", [])
    if not names:
        return False
    run_id = plan["run_id"]
    datasets = [catalog.get(name) for name in names]
    if not all(ds is not None and ds.saved_in_run(run_id) for ds in datasets):
        return False
    record = {
        "run_id": run_id,
        "session_id": plan.get("session_id"),
        "pipeline": group,
        "artifacts": names,
        "committed": time.time(),
    }
    for dataset in datasets:
        dataset.commit(run_id, record)
    try:
        registry.record_commit(Path(plan["run_dir"]), group, record)
    except OSError as exc:
        logger.warning("Could not note the commit of %s in the run registry: %s", group, exc)
    logger.info("Run %s: committed %d artifact(s) of pipeline %s.", run_id, len(names), group)
    return True


def _run_settings(catalog) -> dict[str, Any]:
    """The settings every sidecar repeats (model, dataset, seed...), from the parameters."""
    try:
        params = catalog.get("parameters").load()
    except (AttributeError, DatasetError):
        return {}
    # Typed parameter blocks (Config dataclasses) become plain JSON here.
    params = json_ready(dict(params or {}))
    data = params.get("data") or {}
    return {
        "model": params.get("model"),
        "model_config": params.get("model_config"),
        "dataset": data.get("dataset") if isinstance(data, dict) else None,
        "seed": params.get("seed"),
        # NAD artifacts use the preset with `nads.activation` on synthetic inputs.
        "nads": params.get("nads"),
        "runtime": params.get("runtime"),
    }
