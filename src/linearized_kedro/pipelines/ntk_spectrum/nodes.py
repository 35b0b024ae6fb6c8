"""Nodes of ``ntk_spectrum``: unpack parameters, call ``core``, return values."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import jax
import numpy as np

from linearized_kedro.core import ntk as ntk_core
from linearized_kedro.core import spectrum
from linearized_kedro.core.fingerprint import fingerprint
from linearized_kedro.core.models import (
    ModelConfig,
    build_model,
    count_params,
    init_variables,
)
from linearized_kedro.pipelines.common import as_params

logger = logging.getLogger(__name__)

_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class NtkParams:
    """``ntk:`` parameters (``conf/base/parameters_ntk_spectrum.yml``)."""

    num_eigvecs: int = 100
    method: str = "auto"
    solver: str = "auto"
    block_size: int | None = None
    memory_budget_gb: float = 4.0
    accumulate_dtype: str = "float64"
    nystrom_landmarks: int | None = None
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.accumulate_dtype not in _DTYPES:
            raise ValueError(
                f"ntk.accumulate_dtype must be one of {sorted(_DTYPES)}; "
                f"got {self.accumulate_dtype!r}."
            )
        if int(self.num_eigvecs) < 1:
            raise ValueError(f"ntk.num_eigvecs must be >= 1; got {self.num_eigvecs}.")
        if self.memory_budget_gb <= 0:
            raise ValueError(f"ntk.memory_budget_gb must be > 0; got {self.memory_budget_gb}.")

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_gb * 2**30)


def init_network(model_config: ModelConfig, data_report: dict[str, Any], seed: int) -> dict:
    """θ0 (and BN state) of the preset for the prepared data's image shape (SPEC §1.7).

    Args:
        model_config: the selected preset (``model_config`` parameter).
        data_report: the data pipeline's report (gives ``input_shape`` (H, W, C)).
        seed: integer seed; θ0 = init(key(seed), zeros((1, H, W, C))).

    Returns:
        Variables ``{'params': ..., ['batch_stats': ...]}`` as NumPy arrays.
    """
    config = ModelConfig.from_dict(model_config)
    shape = config.check_input_shape(data_report["input_shape"])
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"'seed' must be an integer; got {seed!r}.")
    variables = init_variables(build_model(config), int(seed), shape)
    logger.info(
        "θ0 of %s (%s) on %s inputs: %d parameters",
        config.name,
        config.activation,
        shape,
        count_params(variables["params"]),
    )
    return jax.tree_util.tree_map(np.asarray, variables)


def _check_inputs(inputs: np.ndarray, config: ModelConfig, variables: dict, k: int) -> None:
    if inputs.ndim != 4:
        raise ValueError(f"prepared_inputs must be (N, H, W, C); got shape {inputs.shape}.")
    config.check_input_shape(inputs.shape[1:])
    expected = jax.eval_shape(lambda: init_variables(build_model(config), 0, inputs.shape[1:]))
    got_shapes = jax.tree_util.tree_map(np.shape, variables)
    want_shapes = jax.tree_util.tree_map(np.shape, expected)
    if got_shapes != want_shapes:
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


def compute_ntk_spectrum(
    prepared_inputs: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    data_report: dict[str, Any],
    ntk: NtkParams,
    seed: int,
    ntk_gram_tiles,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-k eigenpairs of the empirical NTK Gram K = J Jᵀ at θ0 (SPEC §1.4, §3.1).

    Args:
        prepared_inputs: (N, H, W, C) float32, train rows then test rows.
        ntk_init_params: θ0 variables from ``init_network``.
        model_config: the preset θ0 was made with.
        data_report: the data pipeline's report (num_train, num_test).
        ntk: solver settings.
        seed: integer seed (Nyström landmarks, iterative solvers' start).
        ntk_gram_tiles: factory of resumable tile stores (``GramBlockStoreDataset``).

    Returns:
        eigenvalues (k,) descending, eigenvectors (k, N) unit-norm rows with the sign
        convention of ``core.spectrum.apply_sign_convention``, and a report dict.
    """
    config = ModelConfig.from_dict(model_config)
    ntk = as_params(NtkParams, ntk)
    k = int(ntk.num_eigvecs)
    inputs = np.asarray(prepared_inputs, np.float32)
    _check_inputs(inputs, config, ntk_init_params, k)
    module = build_model(config)
    n = inputs.shape[0]
    dtype = _DTYPES[ntk.accumulate_dtype]
    timings: dict[str, float] = {}
    gram_key = None

    if ntk.nystrom_landmarks is not None and int(ntk.nystrom_landmarks) < n:
        m = int(ntk.nystrom_landmarks)
        if k > m:
            raise ValueError(
                f"ntk.num_eigvecs={k} exceeds ntk.nystrom_landmarks={m}: Nyström gives at "
                "most m eigenpairs."
            )
        rng = np.random.default_rng(int(seed))
        landmarks = np.sort(rng.choice(n, size=m, replace=False))
        start = time.perf_counter()
        k_nm = ntk_core.ntk_cross_gram(
            module,
            ntk_init_params,
            inputs,
            inputs[landmarks],
            memory_budget_bytes=ntk.memory_budget_bytes,
            dtype=dtype,
            progress=ntk.progress,
        )
        timings["gram_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        pairs = spectrum.nystrom_eigenpairs(k_nm, landmarks, k)
        timings["eigensolver_seconds"] = time.perf_counter() - start
        plan = {"method": "nystrom", "landmarks": m}
    else:
        plan = ntk_core.gram_plan(
            module,
            ntk_init_params,
            n,
            block_size=ntk.block_size,
            memory_budget_bytes=ntk.memory_budget_bytes,
        )
        store = None
        done = None
        on_block = None
        if ntk.resume:
            key = fingerprint(
                inputs,
                ntk_init_params,
                block_size=plan["block_size"],
                method=ntk.method,
                dtype=ntk.accumulate_dtype,
                model=config.to_dict(),
            )
            gram_key = key
            store = ntk_gram_tiles(
                key,
                {"model": config.to_dict(), "n": n, "block_size": plan["block_size"]},
            )
            done = store.load_all()
            on_block = store.put
            if done:
                logger.info("Resuming the NTK Gram: %d tiles already computed.", len(done))
        start = time.perf_counter()
        gram = ntk_core.ntk_gram(
            module,
            ntk_init_params,
            inputs,
            method=ntk.method,
            block_size=plan["block_size"],
            memory_budget_bytes=ntk.memory_budget_bytes,
            dtype=dtype,
            done_blocks=done,
            on_block=on_block,
            progress=ntk.progress,
        )
        timings["gram_seconds"] = time.perf_counter() - start
        if not np.all(np.isfinite(gram)):
            raise ValueError("The NTK Gram contains NaN or Inf; check the inputs and θ0.")
        start = time.perf_counter()
        pairs = spectrum.top_eigenpairs(
            gram, k, solver=ntk.solver, seed=int(seed), progress=ntk.progress
        )
        timings["eigensolver_seconds"] = time.perf_counter() - start
        del gram

    values = np.asarray(pairs.values, np.float64)
    vectors = np.asarray(pairs.vectors, np.float32)
    num_train = int(data_report["num_train"])
    positive = (vectors > 0).mean(axis=1)
    report = {
        "n": n,
        "k": k,
        "num_train": num_train,
        "num_test": int(data_report["num_test"]),
        "dataset": data_report.get("dataset"),
        "input_shape": list(inputs.shape[1:]),
        "num_params": count_params(ntk_init_params["params"]),
        # Identifies θ0, so downstream runs can refuse eigenvectors of another θ0.
        "init_params_fingerprint": fingerprint(ntk_init_params),
        "model_config": config.to_dict(),
        "seed": int(seed),
        "solver": pairs.solver,
        "solver_info": pairs.info,
        "plan": plan,
        "settings": asdict(ntk),
        "precision": {
            "accumulate_dtype": ntk.accumulate_dtype,
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "x64": bool(jax.config.jax_enable_x64),
        },
        "approximation": "nystrom" if plan.get("method") == "nystrom" else None,
        "gram_fingerprint": gram_key,
        "sign_convention": "each eigenvector's entry of largest magnitude is positive "
        "(ties: first index)",
        "residuals": [float(r) for r in np.asarray(pairs.residuals)],
        "max_residual": float(np.max(pairs.residuals)),
        "eigenvalues": [float(v) for v in values],
        "positive_fraction": [float(p) for p in positive],
        "timings": timings,
    }
    logger.info(
        "NTK spectrum: N=%d, k=%d, λ0=%.4g, λ_k=%.4g, max residual %.2e (%s, %s)",
        n,
        k,
        values[0],
        values[-1],
        report["max_residual"],
        pairs.solver,
        plan.get("method"),
    )
    return values, vectors, report


def release_gram_tiles(ntk_report: dict[str, Any], ntk_gram_tiles) -> None:
    """Deletes this computation's resumable tiles once the spectrum has been saved.

    Only the tiles of this run's fingerprint: another computation for the same dataset
    and model (other settings) may be resuming beside it.
    """
    key = ntk_report.get("gram_fingerprint")
    if key:
        ntk_gram_tiles(key).clear()


def record_sample_index(sample_index: np.ndarray) -> np.ndarray:
    """The prepared samples' positions in the official order, stored with the spectrum."""
    return np.asarray(sample_index, np.int64)
