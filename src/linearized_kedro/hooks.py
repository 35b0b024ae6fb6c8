"""Session hooks: JAX runtime settings and the provenance recorded beside artifacts."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def configure_jax(runtime: dict[str, Any] | None) -> dict[str, Any]:
    """Applies the ``runtime:`` parameters to JAX; returns what was applied.

    Kernel work needs full float32 matmuls: GPUs default to TF32, whose ~1e-3
    relative error destroys the tail of a spectrum spanning 1e6 (SPEC §3.1).
    """
    import jax

    runtime = dict(runtime or {})
    precision = str(runtime.get("matmul_precision", "highest"))
    if precision not in _PRECISIONS:
        raise ValueError(
            f"runtime.matmul_precision={precision!r} is not one of {', '.join(_PRECISIONS)}."
        )
    jax.config.update("jax_enable_x64", bool(runtime.get("enable_x64", False)))
    jax.config.update("jax_default_matmul_precision", precision)
    cache_dir = runtime.get("compilation_cache_dir")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    if runtime.get("distributed"):
        # Auto-detects Slurm / Open MPI; must run before any device is touched.
        jax.distributed.initialize(**dict(runtime.get("distributed_args") or {}))
    applied = {
        "enable_x64": bool(jax.config.jax_enable_x64),
        "matmul_precision": precision,
        "compilation_cache_dir": cache_dir,
    }
    if runtime.get("log_devices", True):
        devices = jax.devices()
        logger.info(
            "JAX %s on %d %s device(s): %s; x64=%s, matmul precision=%s",
            jax.__version__,
            len(devices),
            devices[0].platform,
            ", ".join(str(d) for d in devices[:8]),
            applied["enable_x64"],
            precision,
        )
    return applied


class JaxRuntimeHook:
    """Configures JAX once per session from the ``runtime`` parameters."""

    @hook_impl
    def after_context_created(self, context) -> None:
        configure_jax(context.config_loader["parameters"].get("runtime"))


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


class CloseFiguresHook:
    """Closes a matplotlib figure once the catalog has saved it (nodes return figures)."""

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        from matplotlib.figure import Figure

        if isinstance(data, Figure):
            import matplotlib.pyplot as plt

            plt.close(data)


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
