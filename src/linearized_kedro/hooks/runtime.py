"""JAX runtime configuration, applied once per session from the ``runtime:`` parameters."""

from __future__ import annotations

import atexit
import gc
import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def configure_jax(
    runtime: dict[str, Any] | None, project_path: str | Path | None = None
) -> dict[str, Any]:
    """Applies the ``runtime:`` parameters to JAX; returns what was applied.

    Kernel work needs full float32 matmuls: GPUs default to TF32, whose ~1e-3
    relative error destroys the tail of a spectrum spanning 1e6 (docs/methods.md §3.1).

    The persistent compilation cache (``compilation_cache_dir``, relative to the project)
    keeps XLA programs between runs: JAX keys each entry on the program, the compile
    options, the JAX/jaxlib versions and the device, so a cached program is the program
    that would be compiled and gives the same numbers. On the 2-core CPU, compiling θ0's
    initialisation alone took 1.4-1.7 s for LeNet and 3.6 s for ResNet18 per run.
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
    cache_env = {}
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        # An explicit environment setting wins (JAX has read it already), e.g. one cache
        # shared by all the project copies of a test run.
        cache_dir = os.environ["JAX_COMPILATION_CACHE_DIR"]
    elif cache_dir:
        cache_dir = Path(cache_dir)
        if not cache_dir.is_absolute() and project_path is not None:
            cache_dir = Path(project_path) / cache_dir
        cache_dir = str(cache_dir)
        min_seconds = float(runtime.get("compilation_cache_min_compile_seconds", 1.0))
        if min_seconds < 0:
            raise ValueError(
                f"runtime.compilation_cache_min_compile_seconds must be >= 0; got {min_seconds!r}."
            )
        # No size cap: JAX's needs the optional `filelock` package, and without it the
        # cache silently stays off. Entries are ~0.1-1 MB per program.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
        cache_env = {
            "JAX_COMPILATION_CACHE_DIR": cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(min_seconds),
        }
    # ParallelRunner's workers are new (spawned) processes that run no project hooks: JAX
    # reads the same settings from the environment they inherit.
    os.environ["JAX_ENABLE_X64"] = "1" if x64 else "0"
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = precision
    os.environ.update(cache_env)
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
        configure_jax(
            context.config_loader["parameters"].get("runtime"), project_path=context.project_path
        )


_FREEZE_AT_EXIT: list[bool] = []


def freeze_collector() -> None:
    """Exempts every object alive now from the cyclic garbage collector's scans (``gc.freeze``).

    A ``kedro run`` process holds millions of long-lived objects (Kedro, JAX, Flax,
    matplotlib, SciPy, pandas and their modules), and every full collection walks all of
    them: on the 2-core CPU the six full collections of a LeNet ``ntk_spectrum`` run took
    0.5 s, and the interpreter's own collections at exit 0.5-0.9 s more (docs/scaling.md,
    "Start-up and exit"). Frozen objects are still freed by reference counting; only garbage
    *cycles* among them wait for ``gc.unfreeze``. The first call also registers a freeze at
    exit (``atexit``), so the interpreter's teardown skips the walk; the exit status, the
    other ``atexit`` handlers and open files are not affected.
    """
    gc.freeze()
    if not _FREEZE_AT_EXIT:
        atexit.register(gc.freeze)
        _FREEZE_AT_EXIT.append(True)


class CollectorHook:
    """Keeps the cyclic garbage collector off the objects a run starts with (``freeze_collector``).

    ``runtime.freeze_gc`` (default true) switches it. Frozen once the context exists
    (Kedro, the project settings and JAX imported) and again before the pipeline runs
    (its modules and the catalog built); unfrozen when the run ends or fails, so that a
    process that goes on (a notebook, a test session) collects its cycles as usual. A
    session that loads its context but runs no pipeline (a notebook's ``%reload_kedro``)
    keeps the objects of that moment frozen: cycles among them wait for the next run's end
    or an explicit ``gc.unfreeze()``.
    """

    def __init__(self) -> None:
        self.enabled = False

    @hook_impl
    def after_context_created(self, context) -> None:
        runtime = context.config_loader["parameters"].get("runtime") or {}
        self.enabled = bool(runtime.get("freeze_gc", True))
        if self.enabled:
            freeze_collector()

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if self.enabled:
            freeze_collector()

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        if self.enabled:
            gc.unfreeze()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        if self.enabled:
            gc.unfreeze()
