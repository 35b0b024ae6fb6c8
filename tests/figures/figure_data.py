"""Synthetic inputs for the figure tests (imported by tests/figures/test_figures_*.py): results tables in the one schema, an alignment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from linearized_kedro.experiments import results

TRAIN = {
    "epochs": 3,
    "batch_size": 32,
    "optimizer": "sgd",
    "lr_schedule": "triangle",
    "max_lr": 0.1,
    "momentum": 0.9,
}


def accuracy(kind: str, value: int, split: str) -> float:
    """A distinct, known accuracy for every (kind, task, split)."""
    base = {"network": 0.90, "linear": 0.80, "linear_init": 0.70, "linear_pretrained": 0.60}
    return base[kind] - 0.001 * value + (0.05 if split == "train" else 0.0)


def make_table(
    axis: str,
    values: Sequence[int],
    kinds: Sequence[str] = ("network", "linear"),
    *,
    experiment: str = "eigen_training",
    one_class: Sequence[int] = (),
    diverged: Sequence[tuple[str, int]] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """A results table: tasks ``values`` × ``kinds`` with :func:`accuracy` as metrics.

    Tasks in ``one_class`` get all-zero labels (degenerate); ``(kind, value)`` pairs in
    ``diverged`` diverge (NaN metrics by the divergence policy).
    """
    rng = np.random.default_rng(seed)
    settings = results.RunSettings(
        experiment, "digits", "lenet", "relu", axis, 40, 20, 0, TRAIN, num_eigvecs=None
    )
    rows = []
    for value in values:
        if value in one_class:
            labels_train, labels_test = np.zeros(40), np.zeros(20)
        else:
            labels_train = (rng.random(40) < 0.4).astype(np.float32)
            labels_test = (rng.random(20) < 0.4).astype(np.float32)
        for kind in kinds:
            final = {m: 0.5 for m in results.METRICS}
            final |= {
                "train_accuracy": accuracy(kind, value, "train"),
                "test_accuracy": accuracy(kind, value, "test"),
                "epochs_completed": 3,
            }
            rows.append(
                results.task_row(
                    settings,
                    kind=kind,
                    task_value=value,
                    labels_train=labels_train,
                    labels_test=labels_test,
                    final=final,
                    diverged=(kind, value) in diverged,
                )
            )
    return results.results_table(rows)


def make_alignment(targets: Sequence[int] = (3, 7), k: int = 12) -> dict:
    """An alignment in the stored layout: a peak at each target, larger on train."""
    runs = {}
    for j in targets:
        base = np.exp(-np.arange(k) / 4.0)
        runs[str(j)] = {
            "train_init": base.tolist(),
            "train_end": (base * np.where(np.arange(k) == j, 6.0, 1.0)).tolist(),
            "test_init": (0.9 * base).tolist(),
            "test_end": (0.9 * base * np.where(np.arange(k) == j, 2.0, 1.0)).tolist(),
            "concentration": {
                "train_init": 1.0 + j / 100,
                "train_end": 5.0 + j / 100,
                "test_init": 0.8 + j / 100,
                "test_end": 2.0 + j / 100,
            },
        }
    return {"runs": runs, "eigenvalues": np.linspace(2, 1, k).tolist(), "settings": {}}


def lines_by_gid(fig) -> dict:
    """``gid`` → Line2D for every labelled line of every axes of ``fig``."""
    return {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
