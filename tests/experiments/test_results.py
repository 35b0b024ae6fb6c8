"""experiments.results: the recorder every training experiment uses (one divergence policy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linearized_kedro.core.train import HISTORY_KEYS, TrainResult
from linearized_kedro.experiments import results

SETTINGS = results.RunSettings(
    experiment="eigen_training",
    dataset="digits",
    model="mlp",
    activation="relu",
    task_axis="eigen_index",
    num_train=4,
    num_test=2,
    seed=0,
    train={"epochs": 2, "batch_size": 2},
    num_eigvecs=5,
)
Y_TRAIN, Y_TEST = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0])


def _result(diverged: bool) -> TrainResult:
    final = {**dict.fromkeys(HISTORY_KEYS, 0.5), "epochs_completed": 1 if diverged else 2}
    return TrainResult(
        params={"w": np.ones(3, np.float32)},
        state={"batch_stats": {"mean": np.zeros(3, np.float32)}},
        history={k: np.array([0.25, np.nan if diverged else 0.5]) for k in HISTORY_KEYS},
        final=final,
        diverged=diverged,
        kind="network",
    )


def test_recorder_applies_one_divergence_policy():
    recorder = results.ResultsRecorder(SETTINGS)
    finished = recorder.add("network", 1, _result(False), Y_TRAIN, Y_TEST, eigenvalue=3.0)
    failed = recorder.add("network", 2, _result(True), Y_TRAIN, Y_TEST, eigenvalue=2.0)
    skipped = recorder.add("linear_pretrained", 1, None, Y_TRAIN, Y_TEST, eigenvalue=3.0)
    out = recorder.finish({"note": "x"})
    assert list(out.table.columns) == list(results.COLUMNS) and len(out.table) == 3
    # A finished run: its metrics, its history and its variables (params and state).
    assert finished["test_accuracy"] == 0.5 and not finished["diverged"]
    assert set(out.params) == {"network_1"}
    assert set(out.params["network_1"]) == {"params", "batch_stats"}
    assert out.histories["network_1"]["train_loss"] == [0.25, 0.5]
    # A diverged run: NaN metrics, its history kept, no variables.
    assert failed["diverged"] and math.isnan(failed["test_accuracy"])
    assert failed["epochs_completed"] == 1 and "network_2" in out.histories
    # A model that was never trained: a failed row, nothing else.
    assert skipped["diverged"] and math.isnan(skipped["train_loss"])
    assert "linear_pretrained_1" not in out.histories
    assert out.extras == {"note": "x"}


def test_recorder_without_params_and_duplicate_rows():
    recorder = results.ResultsRecorder(SETTINGS, keep_params=False)
    recorder.add("network", 1, _result(False), Y_TRAIN, Y_TEST)
    out = recorder.finish()
    assert out.params == {} and set(out.histories) == {"network_1"}
    recorder.add("network", 1, _result(False), Y_TRAIN, Y_TEST)  # the same task twice
    with pytest.raises(ValueError, match="Duplicate result rows"):
        recorder.finish()
