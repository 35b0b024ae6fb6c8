"""experiments.cifar2: labels, sizes, the sweep, determinism and failures (docs/methods.md §3.6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fakes import CIFAR2_TEST as NUM_TEST
from fakes import CIFAR2_TRAIN as NUM_TRAIN
from fakes import MLP, cifar2_data

from linearized_kedro.core.config import ConfigError, from_mapping
from linearized_kedro.experiments import results
from linearized_kedro.experiments.cifar2 import Cifar2Config, cifar2_labels, train_cifar2


def config(**changes) -> Cifar2Config:
    values = {
        "num_train": [40, 80],
        "linearize": "both",
        "progress": False,
        "train": {"epochs": 2, "max_lr": 0.05, "batch_size": 32},
    }
    values.update(changes)
    return from_mapping(Cifar2Config, values)


def run(cfg: Cifar2Config, inputs=None, labels=None, y=None):
    if inputs is None:
        inputs, labels = cifar2_data()
    y = cifar2_labels(labels, 10) if y is None else y
    return train_cifar2(inputs, labels, y, NUM_TRAIN, 10, MLP, cfg, seed=42, dataset="digits")


def test_binary_labels_map_the_first_five_classes_to_one():
    got = cifar2_labels(np.arange(10), 10)
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="class"):
        cifar2_labels(np.array([0, 3, 10]), 10)


def test_sizes_are_sorted_distinct_and_checked():
    assert config(num_train=[80, 40, -1, 40]).sizes(120, 10) == [40, 80, 120]
    assert config(num_train=50).sizes(120, 10) == [50]
    with pytest.raises(ConfigError, match="exceeds the 120 prepared"):
        config(num_train=[40, 500]).sizes(120, 10)
    with pytest.raises(ConfigError, match="at least 10"):
        config(num_train=[5]).sizes(120, 10)
    with pytest.raises(ConfigError, match="cifar2.num_train"):
        config(num_train=["40"])
    with pytest.raises(ConfigError, match="cifar2.num_trian"):
        from_mapping(Cifar2Config, {"num_trian": [40]})


def test_sweep_trains_every_size_and_kind_and_learns_the_signal():
    out = run(config())
    table = out.table
    assert list(table.columns) == list(results.COLUMNS)
    assert list(zip(table["task_value"], table["kind"], strict=True)) == [
        (40, "linear"),
        (40, "network"),
        (80, "linear"),
        (80, "network"),
    ]
    assert (table["task_axis"] == "num_train").all() and (table["epochs"] == 2).all()
    assert (table["num_train"] == table["task_value"]).all() and (
        table["num_test"] == NUM_TEST
    ).all()
    assert not table["diverged"].any()
    # Margins: 60 test samples, so chance accuracy is 0.5 ± 0.065; the signal run reaches
    # ~0.88 (MLP) and the no-signal control stays under 0.7 (3 sd above chance).
    assert (table["test_accuracy"] > 0.75).all(), table
    assert set(out.histories) == {"network_40", "linear_40", "network_80", "linear_80"}
    assert out.extras["report"]["sizes"] == [40, 80]
    assert out.extras["report"]["subset_seed"] == 42 + 999
    # Negative control: with the class signal removed the same models stay near chance.
    inputs, labels = cifar2_data(signal=0.0)
    chance = run(config(num_train=[80], linearize="false"), inputs, labels).table
    assert (chance["test_accuracy"] < 0.7).all(), chance


def test_network_only_is_deterministic():
    first = run(config(linearize=False, num_train=[80])).table
    second = run(config(linearize=False, num_train=[80])).table
    assert list(first["kind"]) == ["network"] and list(first["task_value"]) == [80]
    pd.testing.assert_frame_equal(first, second)


def test_diverged_run_is_reported_as_failed():
    inputs, labels = cifar2_data()
    out = run(config(linearize=False, num_train=[80]), inputs * np.float32(1e30), labels)
    table = out.table
    assert table["diverged"].all()
    assert table[list(results.METRICS)].isna().all().all()
    assert out.extras["report"]["diverged_runs"] == ["network_80"]
