"""Nodes of ``ntk_spectrum``: θ0 → the empirical NTK Gram → its top-k eigenpairs (docs/methods.md §3.1)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.common import initial_variables
from linearized_kedro.experiments.spectrum import SpectrumConfig, compute_spectrum

logger = logging.getLogger(__name__)


def init_network(model_config: ModelConfig, data_report: dict[str, Any], seed: int) -> dict:
    """θ0 (and BN state) of the preset for the prepared data's image shape (docs/methods.md §1.7)."""
    return initial_variables(model_config, data_report["input_shape"], seed)


def spectrum(
    prepared_inputs: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    data_report: dict[str, Any],
    ntk: SpectrumConfig,
    seed: int,
    ntk_gram_tiles: Any,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Eigenvalues (k,), eigenvectors (k, N) and the report of the NTK Gram at θ0."""
    out = compute_spectrum(
        prepared_inputs,
        ntk_init_params,
        model_config,
        ntk,
        seed=seed,
        num_train=int(data_report["num_train"]),
        dataset=data_report.get("dataset"),
        tile_store=ntk_gram_tiles,
    )
    if out.is_worker:
        # A jax.distributed run: this process's tiles are in the shared store and process 0
        # assembles, solves and writes the spectrum (docs/scaling.md). A worker ends here,
        # saving nothing, so it can never overwrite process 0's artifacts.
        logger.info(
            "Worker process done: its Gram tiles are stored; process 0 writes the spectrum."
        )
        raise SystemExit(0)
    return out.values, out.vectors, out.report


def release_gram_tiles(ntk_report: dict[str, Any], ntk_gram_tiles: Any) -> None:
    """Deletes this computation's resumable tiles once the spectrum has been saved.

    Only the tiles of this run's fingerprint, and only when no other live run still uses
    them (the store's lease, docs/reliability.md).
    """
    key = ntk_report.get("gram_fingerprint")
    if key:
        ntk_gram_tiles(key).clear()


def record_sample_index(prepared_sample_index: np.ndarray) -> np.ndarray:
    """The prepared samples' positions in the official order, stored with the spectrum."""
    return np.asarray(prepared_sample_index, np.int64)
