"""Small, consistent stand-ins for upstream artifacts (no pipeline has to run to make them)."""

from __future__ import annotations

import jax
import numpy as np

from linearized_kedro.core.fingerprint import fingerprint
from linearized_kedro.core.models import ModelConfig, build_model, init_variables

MLP = {"name": "mlp", "activation": "relu", "features": [16]}
N_TRAIN, N_TEST, K = 48, 16, 6
INPUT_SHAPE = (4, 4, 1)
TRAIN = {"epochs": 2, "batch_size": 16}


def fake_spectrum(seed: int = 0) -> dict:
    """Inputs, an orthonormal "spectrum", θ0 and matching reports, keyed by catalog name.

    The eigenvectors are random orthonormal rows (not the NTK's): enough for everything
    that only needs labels with a known sign pattern and consistent provenance.
    """
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(n, K)))
    variables = jax.tree_util.tree_map(
        np.asarray, init_variables(build_model(MLP), 42, INPUT_SHAPE)
    )
    data_report = {
        "dataset": "synthetic",
        "num_train": N_TRAIN,
        "num_test": N_TEST,
        "input_shape": list(INPUT_SHAPE),
    }
    return {
        "prepared_inputs": x,
        "data_report": data_report,
        "prepared_sample_index": np.arange(n),
        "ntk_eigenvalues": np.sort(rng.uniform(1, 100, K))[::-1],
        "ntk_eigenvectors": q.T.astype(np.float32),
        "ntk_report": {
            **data_report,
            "model_config": ModelConfig.from_dict(MLP).to_dict(),
            "n": n,
            "init_params_fingerprint": fingerprint(variables),
        },
        "ntk_sample_index": np.arange(n),
        "ntk_init_params": variables,
    }


CIFAR2_TRAIN, CIFAR2_TEST = 120, 60


def cifar2_data(seed: int = 0, signal: float = 0.5):
    """8×8 images whose mean brightness carries the binary class (learnable), 10 classes."""
    rng = np.random.default_rng(seed)
    n = CIFAR2_TRAIN + CIFAR2_TEST
    labels = np.concatenate([np.arange(CIFAR2_TRAIN) % 10, np.arange(CIFAR2_TEST) % 10])
    labels = labels[
        np.concatenate([rng.permutation(CIFAR2_TRAIN), CIFAR2_TRAIN + rng.permutation(CIFAR2_TEST)])
    ]
    inputs = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    inputs += np.where(labels <= 4, signal, -signal)[:, None, None, None].astype(np.float32)
    return inputs, labels.astype(np.int64)
