"""Upstream artifacts: a missing input fails early, naming the pipeline to run."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class UpstreamArtifactsHook:
    """Fails early, naming the pipeline to run, when an upstream artifact is missing.

    A pipeline such as ``eigen_training`` reads artifacts that another pipeline
    (``ntk_spectrum``) saved for the same dataset and model. Without this check the
    run would start and fail later with Kedro's generic "no versions" error.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from linearized_kedro.pipeline_registry import all_pipelines

        producers: dict[str, str] = {}
        for name, registered_pipeline in all_pipelines().items():
            for output in registered_pipeline.all_outputs():
                producers[output] = name
        missing = []
        for dataset_name in sorted(pipeline.inputs()):
            if dataset_name.startswith("params:") or dataset_name == "parameters":
                continue
            if dataset_name not in catalog or dataset_name not in producers:
                continue
            if not catalog.exists(dataset_name):
                missing.append((dataset_name, producers[dataset_name]))
        if missing:
            runtime = run_params.get("runtime_params") or {}
            flat = ",".join(f"{k}={v}" for k, v in _flatten(runtime).items())
            suggestion = f" --params {flat}" if flat else ""
            by_producer: dict[str, list[str]] = {}
            for name, producer in missing:
                by_producer.setdefault(producer, []).append(name)
            lines = [
                f"  - {', '.join(names)}: run `kedro run --pipelines {producer}{suggestion}` first"
                for producer, names in by_producer.items()
            ]
            raise RuntimeError(
                "Missing upstream artifacts for this run's settings (dataset/model):\n"
                + "\n".join(lines)
                + "\n(or pin an existing version with --load-versions)."
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
