"""eigen_training and pretrained_comparison on in-memory catalogs: tables, checks, failures."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.core.fingerprint import fingerprint
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.pipelines.eigen_training import create_pipeline as eigen_pipeline
from linearized_kedro.pipelines.eigen_training.nodes import train_on_eigenfunctions
from linearized_kedro.pipelines.pretrained_comparison import (
    create_pipeline as pretrained_pipeline,
)

MLP = {"name": "mlp", "activation": "relu", "features": [16]}
N_TRAIN, N_TEST, K = 48, 16, 6
TRAIN = {"epochs": 2, "batch_size": 16}


class Kept(MemoryDataset):
    def _release(self) -> None:
        pass


@pytest.fixture(scope="module")
def upstream():
    """A fake but consistent spectrum: orthonormal rows, a matching report and θ0."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_TEST, 4, 4, 1)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(N_TRAIN + N_TEST, K)))
    vectors = q.T.astype(np.float32)
    values = np.sort(rng.uniform(1, 100, K))[::-1]
    variables = jax.tree_util.tree_map(np.asarray, init_variables(build_model(MLP), 42, (4, 4, 1)))
    report = {
        "dataset": "synthetic",
        "num_train": N_TRAIN,
        "num_test": N_TEST,
        "input_shape": [4, 4, 1],
    }
    ntk_report = {
        **report,
        "model_config": build_model_config(),
        "n": N_TRAIN + N_TEST,
        "init_params_fingerprint": fingerprint(variables),
    }
    return {
        "prepared_inputs": x,
        "data_report": report,
        "ntk_eigenvalues": values,
        "ntk_eigenvectors": vectors,
        "ntk_report": ntk_report,
        "ntk_sample_index": np.arange(N_TRAIN + N_TEST),
        "sample_index": np.arange(N_TRAIN + N_TEST),
        "ntk_init_params": variables,
    }


def build_model_config():
    from linearized_kedro.core.models import ModelConfig

    return ModelConfig.from_dict(MLP).to_dict()


def _run(pipeline, upstream, outputs, **params):
    entries = {name: MemoryDataset(value) for name, value in upstream.items()}
    entries.update({name: Kept() for name in outputs})
    defaults = {
        "params:model_config": MLP,
        "params:label_idx": None,
        "params:linearize": None,
        "params:seed": 42,
    }
    defaults.update(params)
    entries.update({name: MemoryDataset(value) for name, value in defaults.items()})
    catalog = DataCatalog(entries)
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_eigen_training_table_and_alignment(upstream):
    catalog = _run(
        eigen_pipeline(),
        upstream,
        ["eigen_training_results", "eigen_training_alignment", "eigen_training_params"],
        **{
            "params:eigen_training": {
                "label_idx": [0, 3],
                "linearize": "both",
                "progress": False,
                "train": TRAIN,
            }
        },
    )
    table = catalog.load("eigen_training_results")
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    assert set(table["kind"]) == {"network", "linear"}
    labels = (upstream["ntk_eigenvectors"][3] > 0).astype(float)
    row = table[(table.label_idx == 3) & (table.kind == "linear")].iloc[0]
    assert row["positive_fraction"] == pytest.approx(labels.mean())
    assert row["majority_baseline_test"] == pytest.approx(
        max(labels[N_TRAIN:].mean(), 1 - labels[N_TRAIN:].mean())
    )
    alignment = catalog.load("eigen_training_alignment")
    assert set(alignment["runs"]) == {"0", "3"}  # network runs only
    assert len(alignment["runs"]["3"]["train"]) == K
    assert set(catalog.load("eigen_training_params")) == {
        "network_0",
        "network_3",
        "linear_0",
        "linear_3",
    }


def test_shortcut_params_select_one_task(upstream):
    catalog = _run(
        eigen_pipeline(),
        upstream,
        ["eigen_training_results"],
        **{
            "params:eigen_training": {
                "label_idx": [0, 3],
                "alignment": False,
                "progress": False,
                "train": TRAIN,
            },
            "params:label_idx": 2,
            "params:linearize": "true",
        },
    )
    table = catalog.load("eigen_training_results")
    assert list(table["label_idx"]) == [2] and list(table["kind"]) == ["linear"]


def _call(upstream, **overrides):
    args = dict(upstream)
    args.update(
        model_config=MLP,
        eigen_training={
            "label_idx": [1],
            "linearize": "false",
            "alignment": False,
            "progress": False,
            "train": TRAIN,
        },
        label_idx=None,
        linearize=None,
        seed=42,
    )
    args.update(overrides)
    return train_on_eigenfunctions(**args)


def test_label_idx_not_below_k(upstream):
    with pytest.raises(ValueError, match="out of range.*k=6"):
        _call(upstream, label_idx=6)


def test_spectrum_of_another_model_is_refused(upstream):
    with pytest.raises(ValueError, match="computed for model config"):
        _call(upstream, model_config={**MLP, "activation": "gelu"})


def test_spectrum_on_other_samples_is_refused(upstream):
    other = dict(upstream)
    other["sample_index"] = np.arange(N_TRAIN + N_TEST)[::-1]
    with pytest.raises(ValueError, match="different samples"):
        _call(other)


def test_theta0_of_another_run_is_refused(upstream):
    other = dict(upstream)
    other["ntk_init_params"] = jax.tree_util.tree_map(
        lambda a: a + 1.0, upstream["ntk_init_params"]
    )
    with pytest.raises(ValueError, match="not the θ0 whose NTK was decomposed"):
        _call(other)


def test_bad_linearize_value(upstream):
    with pytest.raises(ValueError, match="false, true or both"):
        _call(upstream, linearize="maybe")


def test_diverged_run_is_reported_as_failed(upstream):
    table, _, trained, _ = _call(
        upstream,
        eigen_training={
            "label_idx": [1],
            "linearize": "false",
            "alignment": True,
            "progress": False,
            "train": {**TRAIN, "max_lr": 1e30, "lr_schedule": "fixed"},
        },
    )
    row = table.iloc[0]
    assert bool(row["diverged"]) and np.isnan(row["test_accuracy"])
    assert trained == {}


def test_pretrained_comparison_three_models(upstream):
    catalog = _run(
        pretrained_pipeline(),
        upstream,
        ["pretrained_comparison_results"],
        **{"params:pretrained_comparison": {"label_idx": 1, "progress": False, "train": TRAIN}},
    )
    table = catalog.load("pretrained_comparison_results")
    assert list(table["model"]) == ["network", "linear_init", "linear_pretrained"]
    assert table["test_accuracy"].between(0, 1).all()
