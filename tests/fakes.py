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


# A tiny training problem for the engine's tests (core/train).
TRAIN_MLP = {"name": "mlp", "features": (8, 8)}


def training_data(seed: int = 0):
    """37 train (not a multiple of the batch 16) and 21 test images of 8x8x3.

    Returns:
        ``(train_x (37, 8, 8, 3), train_y (37,), test_x (21, 8, 8, 3), test_y (21,))``
        float32; the label is whether a corner of the first channel is bright on average.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(58, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0).astype(np.float32)
    return x[:37], y[:37], x[37:], y[37:]


def training_mlp():
    """(module, variables at init(0)) of ``TRAIN_MLP`` on 8x8x3 inputs."""
    module = build_model(TRAIN_MLP)
    return module, init_variables(module, 0, (8, 8, 3))


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


def results_table(experiment: str, task_axis: str, rows, *, dataset="digits", model="lenet"):
    """A results-schema table from ``(task_value, kind, test_acc, train_acc[, diverged])``.

    Labels are a fixed 60/40 split (majority baseline 0.6) unless the task value is 0,
    which gets a one-class (degenerate) task, as the top NTK eigenvector does.
    """
    from linearized_kedro.experiments import results

    settings = results.RunSettings(
        experiment=experiment,
        dataset=dataset,
        model=model,
        activation="relu",
        task_axis=task_axis,
        num_train=100,
        num_test=50,
        seed=42,
        train={
            "epochs": 3,
            "batch_size": 32,
            "optimizer": "sgd",
            "lr_schedule": "linear",
            "max_lr": 0.05,
            "momentum": 0.9,
        },
        num_eigvecs=100 if task_axis == "eigen_index" else None,
    )
    out = []
    for task_value, kind, test_acc, train_acc, *rest in rows:
        diverged = bool(rest and rest[0])
        ones = 0 if (task_axis == "eigen_index" and task_value == 0) else 1
        y_train = np.where(np.arange(100) < 60, ones, 0)
        y_test = np.where(np.arange(50) < 30, ones, 0)
        final = {
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
            "train_loss": 0.1,
            "test_loss": 0.5,
            "param_distance": 1.0,
            "param_distance_relative": 0.1,
            "param_distance_squared": 1.0,
            "epochs_completed": 3,
        }
        out.append(
            results.task_row(
                settings,
                kind=kind,
                task_value=task_value,
                labels_train=y_train,
                labels_test=y_test,
                final=final,
                diverged=diverged,
                eigenvalue=1000.0 / (1 + task_value) if task_axis != "num_train" else float("nan"),
            )
        )
    return results.results_table(out)
