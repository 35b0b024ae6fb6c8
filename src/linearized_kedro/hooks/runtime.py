"""JAX runtime configuration, applied once per session from the ``runtime:`` parameters."""

from __future__ import annotations

import logging
import os
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def configure_jax(runtime: dict[str, Any] | None) -> dict[str, Any]:
    """Applies the ``runtime:`` parameters to JAX; returns what was applied.

    Kernel work needs full float32 matmuls: GPUs default to TF32, whose ~1e-3
    relative error destroys the tail of a spectrum spanning 1e6 (docs/methods.md §3.1).
    """
    import jax

    runtime = dict(runtime or {})
    fraction = runtime.get("device_memory_fraction")
    if fraction is not None:
        # JAX takes 75 % of an accelerator's memory unless told otherwise; the paper-scale
        # Gram wants more (conf/gpu). Read when the backend starts, i.e. before any device use.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(float(fraction)))
    precision = str(runtime.get("matmul_precision", "highest"))
    if precision not in _PRECISIONS:
        raise ValueError(
            f"runtime.matmul_precision={precision!r} is not one of {', '.join(_PRECISIONS)}."
        )
    x64 = bool(runtime.get("enable_x64", False))
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_default_matmul_precision", precision)
    cache_dir = runtime.get("compilation_cache_dir")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    # ParallelRunner's workers are new (spawned) processes that run no project hooks: JAX
    # reads the same settings from the environment they inherit.
    os.environ["JAX_ENABLE_X64"] = "1" if x64 else "0"
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = precision
    if cache_dir:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
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
