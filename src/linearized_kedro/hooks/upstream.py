"""Upstream artifacts: what a run reads from other pipelines, checked before the first node.

A pipeline such as ``eigen_training`` reads artifacts that ``ntk_spectrum`` saved for the same
dataset and model. Before anything runs:

- a missing upstream artifact is an error naming the command that produces it (Kedro's own
  error would come later and say only "no versions");
- nodes tagged :data:`TOLERATES_MISSING` (``reporting``) read ``None`` for an experiment that
  has not run, so they can say so instead of failing;
- the version each upstream artifact resolves to (``--load-versions`` pins included) is put in
  the catalog as the in-memory dataset :data:`VERSIONS_DATASET`, so a report can state where
  every section comes from.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset, MemoryDataset

logger = logging.getLogger(__name__)

TOLERATES_MISSING = "tolerates_missing_inputs"
VERSIONS_DATASET = "artifact_versions"


class MissingArtifact(AbstractDataset[None, None]):
    """Stands in for an upstream artifact that was never produced: loads ``None``."""

    def __init__(self, name: str, producer: str) -> None:
        self._name = name
        self._producer = producer

    def load(self) -> None:
        return None

    def save(self, data: None) -> None:
        raise NotImplementedError(f"{self._name} is missing; run {self._producer} to make it.")

    def _describe(self) -> dict[str, Any]:
        return {"missing": self._name, "producer": self._producer}

    def _exists(self) -> bool:
        return False


def producers() -> dict[str, str]:
    """Dataset name → the registered pipeline whose nodes produce it (``data`` excluded)."""
    from linearized_kedro.pipeline_registry import all_pipelines

    out: dict[str, str] = {}
    for name, pipeline in all_pipelines().items():
        for output in pipeline.all_outputs():
            out[output] = name
    return out


def resolved_version(catalog: Any, name: str) -> str | None:
    """The version ``name`` loads from (a ``--load-versions`` pin or the latest), else None."""
    try:
        dataset = catalog.get(name)
        resolve = getattr(dataset, "resolve_load_version", None)
        return resolve() if resolve else None
    except Exception:  # not versioned, or nothing saved yet
        return None


class UpstreamArtifactsHook:
    """Checks, replaces or records the upstream artifacts of a run (module docstring)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        made_by = producers()
        tolerant = {
            name
            for node in pipeline.nodes
            if TOLERATES_MISSING in node.tags
            for name in node.inputs
        }
        strict = {
            name
            for node in pipeline.nodes
            if TOLERATES_MISSING not in node.tags
            for name in node.inputs
        }
        pins = dict(run_params.get("load_versions") or {})
        missing: dict[str, list[str]] = {}
        versions: dict[str, str | None] = {}
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters":
                continue
            if name not in made_by:
                # Read-only views of produced artifacts (e.g. reporting's version
                # histories) that have nothing to show yet read as None, like the rest.
                if name in tolerant and name not in strict and not catalog.exists(name):
                    catalog[name] = MissingArtifact(name, "the experiment it summarises")
                continue
            if catalog.exists(name):
                versions[name] = resolved_version(catalog, name)
            elif name in pins:
                raise RuntimeError(_missing_pin_message(catalog, name, pins[name]))
            elif name in strict:
                missing.setdefault(made_by[name], []).append(name)
            elif name in tolerant:
                versions[name] = None
                catalog[name] = MissingArtifact(name, made_by[name])
        if missing:
            raise RuntimeError(_missing_message(missing, run_params))
        if VERSIONS_DATASET in pipeline.inputs():
            catalog[VERSIONS_DATASET] = MemoryDataset(versions)


def _missing_message(missing: dict[str, list[str]], run_params: dict[str, Any]) -> str:
    runtime = run_params.get("runtime_params") or {}
    flat = ",".join(f"{k}={v}" for k, v in _flatten(runtime).items())
    suggestion = f" --params {flat}" if flat else ""
    lines = [
        f"  - {', '.join(names)}: run `kedro run --pipelines {producer}{suggestion}` first"
        for producer, names in missing.items()
    ]
    return (
        "Missing upstream artifacts for this run's settings (dataset/model):\n"
        + "\n".join(lines)
        + "\n(or pin an existing version with --load-versions <name>:<version>)."
    )


def _missing_pin_message(catalog: Any, name: str, version: str) -> str:
    dataset = catalog.get(name)
    try:
        pattern = str(dataset._get_versioned_path("*"))  # Kedro's versioned layout
        found = sorted(p.rstrip("/").split("/")[-2] for p in dataset._glob_function(pattern))
    except Exception:
        found = []
    listing = ", ".join(found[-10:]) if found else "none"
    return (
        f"--load-versions {name}:{version}: no such version of {name}. "
        f"Versions that exist (latest last): {listing}."
    )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
