"""eigen_training and pretrained_comparison wired on in-memory catalogs (SequentialRunner)."""

from __future__ import annotations

import pytest
from fakes import MLP, TRAIN, fake_spectrum
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.experiments.eigen_tasks import EigenTasksConfig
from linearized_kedro.experiments.pretrained import PretrainedConfig
from linearized_kedro.pipelines.eigen_training import create_pipeline as eigen_pipeline
from linearized_kedro.pipelines.pretrained_comparison import (
    create_pipeline as pretrained_pipeline,
)


class Kept(MemoryDataset):
    def _release(self) -> None:
        pass


@pytest.fixture(scope="module")
def upstream():
    return fake_spectrum()


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


def test_eigen_training_outputs(upstream):
    config = EigenTasksConfig(label_idx=(0, 3), progress=False, train=TRAIN)
    outputs = [
        "eigen_training_results",
        "eigen_training_alignment",
        "eigen_training_trained_params",
        "eigen_training_histories",
    ]
    catalog = _run(eigen_pipeline(), upstream, outputs, **{"params:eigen_training": config})
    table = catalog.load("eigen_training_results")
    assert sorted(zip(table.task_value, table.kind, strict=True)) == [
        (0, "linear"),
        (0, "network"),
        (3, "linear"),
        (3, "network"),
    ]
    assert set(catalog.load("eigen_training_alignment")["runs"]) == {"0", "3"}
    assert set(catalog.load("eigen_training_trained_params")) == {
        "network_0",
        "network_3",
        "linear_0",
        "linear_3",
    }
    assert set(catalog.load("eigen_training_histories")) == {
        "network_0",
        "network_3",
        "linear_0",
        "linear_3",
    }


def test_shortcut_params_select_one_task(upstream):
    config = EigenTasksConfig(label_idx=(0, 3), alignment=False, progress=False, train=TRAIN)
    catalog = _run(
        eigen_pipeline(),
        upstream,
        ["eigen_training_results"],
        **{"params:eigen_training": config, "params:label_idx": 2, "params:linearize": "true"},
    )
    table = catalog.load("eigen_training_results")
    assert list(table["task_value"]) == [2] and list(table["kind"]) == ["linear"]


def test_pretrained_comparison_outputs(upstream):
    config = PretrainedConfig(label_idx=1, progress=False, train=TRAIN)
    catalog = _run(
        pretrained_pipeline(),
        upstream,
        ["pretrained_comparison_results", "pretrained_comparison_trained_params"],
        **{"params:pretrained_comparison": config, "params:label_idx": 2},
    )
    table = catalog.load("pretrained_comparison_results")
    assert set(table["kind"]) == {"network", "linear_init", "linear_pretrained"}
    assert set(table["task_value"]) == {2}  # the shortcut wins over the block's label_idx
    assert len(catalog.load("pretrained_comparison_trained_params")) == 3
