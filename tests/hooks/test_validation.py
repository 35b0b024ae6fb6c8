"""hooks.validation: cross-block parameter checks before any node runs (no data read)."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, MemoryDataset

from linearized_kedro.core.config import ConfigError
from linearized_kedro.experiments.cifar2 import Cifar2Config
from linearized_kedro.experiments.data import DataConfig
from linearized_kedro.experiments.eigen_tasks import EigenTasksConfig
from linearized_kedro.hooks.validation import validate_run
from linearized_kedro.pipeline_registry import all_pipelines, with_data

MLP = {"name": "mlp", "activation": "relu", "features": [16]}
PIPELINES = all_pipelines()


def _catalog(**params) -> DataCatalog:
    defaults = {
        "seed": 42,
        "model_config": MLP,
        "label_idx": None,
        "linearize": None,
        "data": DataConfig(dataset="digits", subset_sizes={"digits": [-1, -1]}),
        "ntk": PIPELINES["ntk_spectrum"] and _ntk(100),
        "eigen_training": EigenTasksConfig(label_idx=(1, 5)),
        "cifar2": Cifar2Config(num_train=(100, -1)),
    }
    defaults.update(params)
    return DataCatalog({f"params:{k}": MemoryDataset(v) for k, v in defaults.items()})


def _ntk(k: int):
    from linearized_kedro.experiments.spectrum import SpectrumConfig

    return SpectrumConfig(num_eigvecs=k)


def _pipeline(*names):
    data = PIPELINES["data"]
    return sum((with_data(n, PIPELINES[n], data) for n in names), PIPELINES[names[0]].__class__([]))


def test_consistent_parameters_pass():
    validate_run(_pipeline("ntk_spectrum", "eigen_training", "cifar2"), _catalog())


def test_num_eigvecs_not_below_n_is_refused_before_the_data_is_read():
    # digits: 1 437 + 360 rows → N = 1 797.
    with pytest.raises(ConfigError, match="N=1797"):
        validate_run(_pipeline("ntk_spectrum"), _catalog(ntk=_ntk(1797)))
    validate_run(_pipeline("ntk_spectrum"), _catalog(ntk=_ntk(1796)))  # control


def test_eigen_index_checked_against_this_runs_k():
    with pytest.raises(ConfigError, match=r"label_idx.*\[20\] out of range.*ntk.num_eigvecs"):
        validate_run(
            _pipeline("ntk_spectrum", "eigen_training"), _catalog(ntk=_ntk(20), label_idx=20)
        )
    validate_run(_pipeline("ntk_spectrum", "eigen_training"), _catalog(ntk=_ntk(21), label_idx=20))


def test_bad_seed_unknown_dataset_and_model_name_the_problem():
    with pytest.raises(ConfigError, match="seed must be an integer"):
        validate_run(_pipeline("cifar2"), _catalog(seed="42"))
    with pytest.raises(Exception, match="valid names: cifar10.*digits"):
        validate_run(_pipeline("cifar2"), _catalog(data=DataConfig(dataset="svhn")))
    with pytest.raises(ValueError, match="mlp"):
        validate_run(_pipeline("cifar2"), _catalog(model_config={"name": "vgg"}))


def test_cifar2_sizes_checked_against_the_configured_data():
    data = DataConfig(dataset="digits", num_train=200, num_test=100)
    with pytest.raises(ConfigError, match="exceeds the 200 prepared"):
        validate_run(
            _pipeline("cifar2"), _catalog(data=data, cifar2=Cifar2Config(num_train=(500,)))
        )
    validate_run(_pipeline("cifar2"), _catalog(data=data, cifar2=Cifar2Config(num_train=(150,))))
