"""Provenance: the run's settings handed to the datasets that write sidecars."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class RunMetadataHook:
    """Hands the run's settings to the project's datasets, which write them beside artifacts."""

    def __init__(self) -> None:
        self._params: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        # Raw (merged with --params) values: `context.params` would hold typed objects.
        self._params = dict(context.config_loader["parameters"])

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from linearized_kedro.datasets.metadata import set_run_metadata

        params = self._params
        data = params.get("data") or {}
        set_run_metadata(
            {
                "model": params.get("model"),
                "model_config": params.get("model_config"),
                "dataset": data.get("dataset"),
                "seed": params.get("seed"),
                # NAD artifacts use the preset with `nads.activation` on synthetic inputs.
                "nads": params.get("nads"),
                "runtime": params.get("runtime"),
                "env": run_params.get("env"),
                "pipeline_names": run_params.get("pipeline_names"),
                "runtime_params": run_params.get("runtime_params"),
                "session_id": run_params.get("session_id"),
            }
        )
