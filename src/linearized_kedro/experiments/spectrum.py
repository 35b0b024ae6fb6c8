"""The NTK spectrum experiment: top-k eigenpairs of the empirical NTK Gram at θ0 (docs/methods.md §3.1).

``compute_spectrum(inputs, variables, model_config, SpectrumConfig(...), seed=...)`` does
the whole computation the ``ntk_spectrum`` node, a notebook or a benchmark needs:

1. input checks (k < N, finite inputs, θ0 shaped like the model preset);
2. Nyström (``ntk.nystrom_landmarks`` < N, an explicit approximation) or the exact Gram;
3. where the work runs (``ntk.device``): on an accelerator the tile products, the Gram (when
   it fits the device memory) and the eigensolver run on the device; on a CPU the host path
   (NumPy/BLAS products, host eigensolver), which is the faster one there;
4. the exact zero columns (``ntk.drop_zero_columns``: one batched backward pass proves which
   parameter leaves have an identically zero per-sample gradient; they get no columns);
5. the fingerprint of the computation and its resumable tile store (``ntk.resume``);
6. under ``jax.distributed`` with several processes: each computes its share of the tiles
   into the shared store, process 0 waits for all of them, assembles and solves;
7. the plan, the Gram, its finiteness, the eigensolver and the report.

Everything it decided and measured is in ``Spectrum.report`` (path, precision rule, zero
columns, plan, residuals, timings), so a stored spectrum says how it was made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import jax
import numpy as np

from linearized_kedro.core import ntk, sharding, spectrum
from linearized_kedro.core.config import Config, ConfigError, from_mapping
from linearized_kedro.core.fingerprint import fingerprint
from linearized_kedro.core.models import ModelConfig, build_model, count_params, init_variables
from linearized_kedro.core.ntk import device as ntk_device

log = logging.getLogger(__name__)

_DTYPES = {"float32": np.float32, "float64": np.float64}
SIGN_CONVENTION = "each eigenvector's entry of largest magnitude is positive (ties: first index)"
# Polling interval of process 0 while other processes finish their tiles.
_POLL_SECONDS = 2.0
# Fraction of the device's memory the Gram and the solver may plan to use.
_DEVICE_MEMORY_FRACTION = 0.9


@dataclass(frozen=True)
class SpectrumConfig(Config):
    """The ``ntk:`` parameters (``conf/base/parameters_ntk_spectrum.yml``).

    Attributes:
        num_eigvecs: k, the number of eigenpairs; k < N.
        method: Gram method, ``auto | structured | jacobian`` (``core.ntk``).
        solver: eigensolver, ``auto | dense | block_krylov`` (``core.spectrum``).
        block_size: samples per Gram tile; ``null`` → the largest that fits the budget.
            Keep it fixed to resume a run (tile keys depend on it).
        memory_budget_gb: cached feature blocks plus tile temporaries (host RAM for host
            products, device memory for device products).
        accumulate_dtype: dtype of the Gram (products always accumulate in float64 when
            ``float64``).
        nystrom_landmarks: m random landmarks → Nyström approximation (not exact);
            ``null`` → the exact Gram.
        resume: persist finished Gram tiles so that a restarted run continues.
        resume_after_s: with ``resume``, start persisting tiles only once the Gram has
            run this many seconds (then the tiles finished so far, and every later one
            as it finishes). A Gram that finishes sooner writes no tiles: a killed run
            loses at most this much Gram work, and short Grams skip the writes (LeNet
            N = 8000 on 2 cores: Gram 4.35-4.57 s without them, 5.20-6.00 s with them;
            ``benchmarks/ntk_spectrum.py --kedro-variant``). 0: every tile as it finishes. A
            multi-process run always writes at once (the store is how tiles meet).
        progress: progress bars.
        device: where products, Gram and eigensolver run: ``auto`` (the device when JAX's
            default backend is an accelerator, else the host), ``host`` or ``device``.
        device_precision: device tile products in ``float64``, ``float32`` (float32 chunks
            accumulated in float64) or ``auto`` (a measured rule, ``core.ntk.device``).
        host_precision: host tile products (a CPU) in ``float32`` (float32 features and
            GEMMs over ≤ 1024-column chunks added in float64: ~1e-7 relative per entry;
            at k = 100 eigenvalues within ~1e-7 of float64 products), ``float64`` (exact
            up to float64 round-off) or ``auto`` (float32 for k ≤ 200, float64 beyond,
            where the spectrum's range makes the tail sensitive;
            ``core.ntk.resolve_host_precision``).
        device_memory_gb: device memory the Gram and eigensolver may use; ``null`` → 90 %
            of what the device reports (the Gram stays on the host when it does not fit).
        drop_zero_columns: leave out parameter leaves whose per-sample gradient is proven
            identically zero on all N samples (exact; ResNet18's zero-init branches).
        tol: relative residual target of the iterative eigensolver; ``null`` → 1e-5.
        distributed_timeout_s: how long process 0 of a multi-process run waits for the
            other processes' tiles.
        blas_threads: host BLAS threads (and the host loops beside them): ``all`` (every
            core: the same machine gives the same bits whatever its load), ``free`` (the
            cores other processes leave idle, measured from ``/proc/stat``: faster on an
            oversubscribed machine, but the rounding of BLAS products and LAPACK
            eigensolvers depends on the thread count, so results then vary with the load
            at rounding level) or a count.
            ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
            environment take precedence.
    """

    SECTION: ClassVar[str] = "ntk"

    num_eigvecs: int = 100
    method: Literal["auto", "structured", "jacobian"] = "auto"
    solver: Literal["auto", "dense", "block_krylov"] = "auto"
    block_size: int | None = None
    memory_budget_gb: float = 4.0
    accumulate_dtype: Literal["float32", "float64"] = "float64"
    nystrom_landmarks: int | None = None
    resume: bool = True
    resume_after_s: float = 30.0
    progress: bool = True
    device: Literal["auto", "host", "device"] = "auto"
    device_precision: Literal["auto", "float64", "float32"] = "auto"
    host_precision: Literal["auto", "float64", "float32"] = "auto"
    device_memory_gb: float | None = None
    drop_zero_columns: bool = True
    tol: float | None = None
    distributed_timeout_s: float = 3600.0
    blas_threads: int | Literal["all", "free"] = "all"

    def validate(self) -> None:
        checks = (
            ("num_eigvecs", self.num_eigvecs >= 1, ">= 1"),
            ("memory_budget_gb", self.memory_budget_gb > 0, "> 0"),
            ("block_size", self.block_size is None or self.block_size >= 1, ">= 1 or null"),
            (
                "nystrom_landmarks",
                self.nystrom_landmarks is None or self.nystrom_landmarks >= 1,
                ">= 1 or null",
            ),
            (
                "device_memory_gb",
                self.device_memory_gb is None or self.device_memory_gb > 0,
                "> 0 or null",
            ),
            ("tol", self.tol is None or 0 < self.tol < 1, "in (0, 1) or null"),
            ("distributed_timeout_s", self.distributed_timeout_s > 0, "> 0"),
            ("resume_after_s", self.resume_after_s >= 0, ">= 0 (0: persist every tile)"),
            (
                "blas_threads",
                self.blas_threads in ("all", "free") or int(self.blas_threads) >= 1,
                "'all', 'free' or a count >= 1",
            ),
        )
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(
                    f"{self.SECTION}.{name} must be {what}; got {getattr(self, name)!r}."
                )

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_gb * 2**30)


@dataclass(frozen=True)
class Spectrum:
    """Top-k eigenpairs of the empirical NTK Gram and how they were computed.

    Attributes:
        values: (k,) float64, descending.
        vectors: (k, N) float32, unit-norm rows in the sign convention of
            ``core.spectrum.apply_sign_convention``.
        report: JSON-friendly dict (see ``compute_spectrum``).

    On a worker process of a multi-process run (``report["distributed"]["role"] ==
    "worker"``) ``values`` and ``vectors`` are empty: process 0 holds the result.
    """

    values: np.ndarray
    vectors: np.ndarray
    report: dict[str, Any]

    @property
    def is_worker(self) -> bool:
        return self.report.get("distributed", {}).get("role") == "worker"


def check_inputs(inputs: Any, variables: Mapping, model_config: Any, k: int) -> np.ndarray:
    """The inputs as float32 (N, H, W, C), after every check that can fail early.

    Raises:
        ValueError: wrong rank, a shape the preset does not take, θ0 of another preset or
            input shape, k >= N, or non-finite inputs.
    """
    config = ModelConfig.from_dict(model_config)
    inputs = np.asarray(inputs, np.float32)
    if inputs.ndim != 4:
        raise ValueError(f"prepared_inputs must be (N, H, W, C); got shape {inputs.shape}.")
    config.check_input_shape(inputs.shape[1:])
    expected = jax.eval_shape(lambda: init_variables(build_model(config), 0, inputs.shape[1:]))
    if jax.tree_util.tree_map(np.shape, dict(variables)) != jax.tree_util.tree_map(
        np.shape, dict(expected)
    ):
        raise ValueError(
            "ntk_init_params do not match the model preset "
            f"{config.name!r} on inputs {inputs.shape[1:]}: rerun ntk_spectrum with the same "
            "--params model=... and data.dataset=..."
        )
    n = inputs.shape[0]
    if k >= n:
        raise ValueError(
            f"ntk.num_eigvecs={k} must be smaller than the number of samples N={n} "
            "(data.num_train + data.num_test). Lower ntk.num_eigvecs or use more samples."
        )
    if not np.all(np.isfinite(inputs)):
        raise ValueError("prepared_inputs contain NaN or Inf; rerun the data pipeline.")
    return inputs


def device_memory_bytes(config: SpectrumConfig) -> int | None:
    """Device memory the Gram and solver may use: configured, else 90 % of the device's."""
    if config.device_memory_gb is not None:
        return int(config.device_memory_gb * 2**30)
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    return None if limit is None else int(_DEVICE_MEMORY_FRACTION * limit)


def resolve_path(config: SpectrumConfig, n: int, k: int) -> dict[str, Any]:
    """Where products, Gram and eigensolver run, and why.

    Device products whenever ``config.device`` resolves to the device; the Gram (float64,
    8·N² bytes) and the eigensolver stay on the device when the Gram plus the feature
    budget, and the Gram plus the solver's workspace for at least 3 Krylov blocks, fit
    ``device_memory_bytes`` (the Krylov block count is capped to what fits); otherwise
    tiles stream to the host and the host solver runs.
    """
    backend = jax.default_backend()
    where = config.device
    if where == "auto":
        where = "device" if ntk_device.accelerator_present() else "host"
    gram_bytes = 8 * n * n
    available = device_memory_bytes(config)
    max_blocks = spectrum.common.MAX_BLOCKS if available is None else None
    if available is not None and available > gram_bytes:
        max_blocks = spectrum.device_max_blocks(n, k, available - gram_bytes, config.solver)
    fits = max_blocks is not None and (
        available is None or gram_bytes + config.memory_budget_bytes <= available
    )
    on_device = where == "device" and fits
    return {
        "backend": backend,
        "requested": config.device,
        "products": "device" if where == "device" else "host",
        "gram": "device" if on_device else "host",
        "eigensolver": "device" if on_device else "host",
        "device_memory_bytes": available,
        "gram_bytes": gram_bytes,
        "device_max_krylov_blocks": max_blocks if on_device else None,
    }


def compute_spectrum(
    inputs: Any,
    variables: Mapping[str, Any],
    model_config: Any,
    config: SpectrumConfig | Mapping[str, Any],
    *,
    seed: int,
    num_train: int,
    dataset: str | None = None,
    tile_store: Callable[..., Any] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Spectrum:
    """Top-k eigenpairs of the empirical NTK Gram K = J Jᵀ at θ0 (docs/methods.md §1.4, §3.1).

    Args:
        inputs: (N, H, W, C) float32, train rows then test rows.
        variables: θ0, ``{'params': ..., ['batch_stats': ...]}`` of the preset.
        model_config: the preset θ0 was made with (a ``ModelConfig`` or its mapping).
        config: the ``ntk:`` block (a ``SpectrumConfig`` or its mapping).
        seed: integer seed (Nyström landmarks, the iterative solver's start).
        num_train: rows of ``inputs`` that are training samples (the rest are test).
        dataset: dataset name for the report.
        tile_store: ``tile_store(fingerprint, description) -> store`` with
            ``load_all()``, ``put(key, tile)``, ``keys()``, ``clear()``; required for
            ``resume`` and for several processes (on a shared filesystem).
        process_index, process_count: this process of a ``jax.distributed`` run; default
            ``jax.process_index()`` / ``jax.process_count()``.

    Returns:
        ``Spectrum(values (k,) float64, vectors (k, N) float32, report)``. The report has
        ``n, k, num_train, num_test, dataset, input_shape, num_params,
        init_params_fingerprint, model_config, seed, solver, solver_info, plan, settings,
        precision, approximation, gram_fingerprint, sign_convention, residuals,
        max_residual, eigenvalues, positive_fraction, timings``, ``gram_tiles`` (with a
        tile store: tiles reused, tiles written, ``resume_after_s``) and ``path`` (where each
        stage ran, the product precision and its measured rule), ``zero_columns`` (the
        dropped leaves and the check) and ``distributed`` (process index/count, role).
        Worker processes of a multi-process run return empty arrays (``is_worker``).

    Raises:
        ValueError / ConfigError: bad inputs or settings, or a non-finite Gram.
        TimeoutError: (process 0) tiles of other processes still missing after
            ``ntk.distributed_timeout_s``.
    """
    if not isinstance(config, SpectrumConfig):
        config = from_mapping(SpectrumConfig, config)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"'seed' must be an integer; got {seed!r}.")
    started = time.perf_counter()
    k = int(config.num_eigvecs)
    model = ModelConfig.from_dict(model_config)
    inputs = check_inputs(inputs, variables, model, k)
    n = inputs.shape[0]
    if process_index is None or process_count is None:
        process_index, process_count = sharding.process_info()
    role = "single" if process_count == 1 else "assembler" if process_index == 0 else "worker"
    report = {
        "n": n,
        "k": k,
        "num_train": int(num_train),
        "num_test": n - int(num_train),
        "dataset": dataset,
        "input_shape": list(inputs.shape[1:]),
        "num_params": count_params(variables["params"]),
        # Identifies θ0, so downstream runs can refuse eigenvectors of another θ0.
        "init_params_fingerprint": fingerprint(variables),
        "model_config": model.to_dict(),
        "seed": int(seed),
        "settings": config.to_dict(),
        "precision": {
            "accumulate_dtype": config.accumulate_dtype,
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "x64": bool(jax.config.jax_enable_x64),
        },
        "zero_columns": {"enabled": False},
        "distributed": {
            "process_index": int(process_index),
            "process_count": int(process_count),
            "role": role,
        },
        "gram_fingerprint": None,
        "sign_convention": SIGN_CONVENTION,
        "timings": {},
    }
    module = build_model(model)
    with sharding.host_blas_threads(config.blas_threads) as threads:
        report["blas_threads"] = threads
        pairs = _spectrum(
            module, variables, inputs, model, config, report, tile_store, process_index, int(seed)
        )
    if pairs is None:  # a worker process: its tiles are in the store
        report["timings"]["total_seconds"] = time.perf_counter() - started
        return Spectrum(np.zeros(0, np.float64), np.zeros((0, n), np.float32), report)
    values = np.asarray(pairs.values, np.float64)
    vectors = np.asarray(pairs.vectors, np.float32)
    report["timings"]["total_seconds"] = time.perf_counter() - started
    report.update(
        solver=pairs.solver,
        solver_info=pairs.info,
        approximation="nystrom" if report["plan"].get("method") == "nystrom" else None,
        residuals=[float(r) for r in np.asarray(pairs.residuals)],
        max_residual=float(np.max(pairs.residuals)),
        eigenvalues=[float(v) for v in values],
        positive_fraction=[float(p) for p in (vectors > 0).mean(axis=1)],
    )
    log.info(
        "NTK spectrum: N=%d, k=%d, λ0=%.4g, λ_k=%.4g, max residual %.2e (%s, %s; products %s, "
        "eigensolver %s)",
        n,
        k,
        values[0],
        values[-1],
        report["max_residual"],
        pairs.solver,
        report["plan"].get("method"),
        report["path"]["products"],
        report["path"]["eigensolver"],
    )
    return Spectrum(values, vectors, report)


def _spectrum(module, variables, inputs, model, config, report, tile_store, process_index, seed):
    """Eigenpairs by Nyström or from the exact Gram; None on a worker process."""
    n, k = inputs.shape[0], int(config.num_eigvecs)
    if config.nystrom_landmarks is not None and int(config.nystrom_landmarks) < n:
        if report["distributed"]["process_count"] > 1:
            raise ValueError(
                "ntk.nystrom_landmarks is not split over several processes; run it in one "
                "process (it needs m Jacobian rows and one pass over N samples)."
            )
        return _nystrom(module, variables, inputs, config, seed, report)
    gram = _exact_gram(module, variables, inputs, model, config, report, tile_store, process_index)
    if gram is None:
        return None
    t0 = time.perf_counter()
    pairs = spectrum.top_eigenpairs(
        gram,
        k,
        solver=config.solver,
        seed=seed,
        tol=config.tol,
        progress=config.progress,
        device=report["path"]["eigensolver"] == "device",
        max_blocks=report["path"]["device_max_krylov_blocks"],
    )
    report["timings"]["eigensolver_seconds"] = time.perf_counter() - t0
    return pairs


def _nystrom(module, variables, inputs, config: SpectrumConfig, seed: int, report: dict):
    """Nyström eigenpairs from m random landmark columns (an explicit approximation)."""
    n, k, m = inputs.shape[0], int(config.num_eigvecs), int(config.nystrom_landmarks)
    if k > m:
        raise ValueError(
            f"ntk.num_eigvecs={k} exceeds ntk.nystrom_landmarks={m}: Nyström gives at "
            "most m eigenpairs."
        )
    landmarks = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    t0 = time.perf_counter()
    k_nm = ntk.ntk_cross_gram(
        module,
        variables,
        inputs,
        inputs[landmarks],
        memory_budget_bytes=config.memory_budget_bytes,
        dtype=_DTYPES[config.accumulate_dtype],
        progress=config.progress,
    )
    report["timings"]["gram_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = spectrum.nystrom_eigenpairs(k_nm, landmarks, k)
    report["timings"]["eigensolver_seconds"] = time.perf_counter() - t0
    report["plan"] = {"method": "nystrom", "landmarks": m}
    report["path"] = {
        "backend": jax.default_backend(),
        "products": "host",
        "gram": "host",
        "eigensolver": "host",
    }
    return pairs


def _exact_gram(module, variables, inputs, model, config, report, tile_store, process_index):
    """The exact Gram (host or device array); None on a worker process.

    Records ``plan``, ``path``, ``zero_columns``, ``gram_fingerprint`` and timings in
    ``report``.
    """
    n, k = inputs.shape[0], int(config.num_eigvecs)
    timings, distributed = report["timings"], report["distributed"]
    process_count = distributed["process_count"]
    path = resolve_path(config, n, k)
    report["path"] = path
    dropped: tuple = ()
    if config.drop_zero_columns:
        t0 = time.perf_counter()
        zero = ntk.find_zero_columns(module, variables, inputs)
        timings["zero_columns_seconds"] = time.perf_counter() - t0
        dropped = zero.dropped
        report["zero_columns"] = {"enabled": True, **zero.report()}
    job = ntk.TiledGram(
        module,
        variables,
        inputs,
        method=config.method,
        block_size=config.block_size,
        memory_budget_bytes=config.memory_budget_bytes,
        dtype=_DTYPES[config.accumulate_dtype],
        products=path["products"],
        device_precision=config.device_precision,
        host_precision=ntk.resolve_host_precision(
            config.host_precision, _DTYPES[config.accumulate_dtype], k
        ),
        dropped=dropped,
    )
    report["plan"] = job.plan
    path["product_precision"] = job.precision
    path["precision_rule"] = job.precision_rule
    report["precision"]["product_precision"] = job.precision
    store, done = None, {}
    if tile_store is None and process_count > 1:
        raise ValueError(
            "A multi-process Gram needs a tile store on a shared filesystem: pass "
            "tile_store=... (the ntk_gram_tiles catalog entry)."
        )
    if config.resume and tile_store is None:
        # A library call without a store (a notebook): nothing to resume from or into.
        log.debug("No tile store: the Gram is computed in one go, not resumable.")
    if (config.resume and tile_store is not None) or process_count > 1:
        key = fingerprint(
            inputs,
            variables,
            block_size=job.block_size,
            method=job.method,
            dtype=config.accumulate_dtype,
            precision=job.precision,
            model=model.to_dict(),
        )
        report["gram_fingerprint"] = key
        store = tile_store(key, {"model": model.to_dict(), "n": n, "block_size": job.block_size})
        done = store.load_all()
        job.check_tiles(done)
        if done:
            log.info("Resuming the NTK Gram: %d tiles already computed.", len(done))
    on_device = path["gram"] == "device"
    t0 = time.perf_counter()
    if store is not None:
        written = report["gram_tiles"] = {
            "reused": len(done),
            "written": 0,
            "resume_after_s": float(config.resume_after_s) if process_count == 1 else 0.0,
        }

        def persist(key, tile):
            store.put(key, tile)
            written["written"] += 1

    if process_count == 1:
        gram = job.gram(
            done_blocks=done,
            on_block=persist if store is not None else None,
            on_block_after_s=config.resume_after_s,
            progress=config.progress,
            on_device=on_device,
        )
    else:
        mine = sharding.split_tiles(job.keys(), process_index, process_count)
        todo = [key for key in mine if key not in done]
        for _ in job.compute(todo, on_block=persist, progress=config.progress):
            pass
        distributed.update(tiles_assigned=len(mine), tiles_computed=len(todo))
        if process_index != 0:
            timings["gram_seconds"] = time.perf_counter() - t0
            log.info(
                "Process %d of %d: %d tiles written; process 0 assembles and solves.",
                process_index,
                process_count,
                len(todo),
            )
            return None
        tiles = _wait_for_tiles(store, job, config.distributed_timeout_s, process_count)
        gram = job.assemble(tiles.items(), on_device=on_device)
    timings["gram_seconds"] = time.perf_counter() - t0
    report["plan"]["feature_block_evaluations"] = job.feature_block_evaluations
    return gram


def _wait_for_tiles(store, job, timeout_s: float, process_count: int) -> dict:
    """Every tile of ``job`` from the shared store, waiting for the other processes."""
    wanted = set(job.keys())
    deadline = time.monotonic() + float(timeout_s)
    while True:
        missing = wanted - set(store.keys())
        if not missing:
            break
        if time.monotonic() > deadline:
            owners = sorted(
                p
                for p in range(process_count)
                if missing & set(sharding.split_tiles(job.keys(), p, process_count))
            )
            raise TimeoutError(
                f"Process 0 waited {timeout_s:.0f} s (ntk.distributed_timeout_s) for "
                f"{len(missing)} of {len(wanted)} Gram tiles, e.g. {sorted(missing)[:5]}, "
                f"from process(es) {owners}. Check that they run and share the tile store's "
                "filesystem; rerunning resumes from the tiles already stored."
            )
        time.sleep(_POLL_SECONDS)
    tiles = store.load_all()
    missing = wanted - set(tiles)
    if missing:
        raise ValueError(
            f"{len(missing)} stored Gram tiles could not be read (e.g. {sorted(missing)[:5]}); "
            "rerun: unreadable tiles are recomputed."
        )
    job.check_tiles(tiles)
    return {key: tiles[key] for key in wanted}
