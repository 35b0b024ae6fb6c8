"""Extending the project: a new model and a new dataset are one definition each.

A toy architecture (module + config + one ``register_model`` call) and a toy dataset (one
``DatasetSpec`` registered, its files in the official IDX format) run through the real
``ntk_spectrum`` pipeline in a Kedro session; no project file is edited. The model's preset
comes from ``--params`` like any preset override.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import numpy as np
import pytest
from conftest import copy_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from official_formats import write_idx

from linearized_kedro.core.models import ModelConfig, register_model, unregister_model
from linearized_kedro.datasets.raw import (
    DatasetSpec,
    FileRole,
    RawFile,
    register_dataset,
    unregister_dataset,
)
from linearized_kedro.datasets.raw.formats import SPLIT_KEYS

pytestmark = pytest.mark.slow


class Tiny(nn.Module):
    """One hidden tanh layer of ``width`` units and a scalar output."""

    width: int

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(1)(nn.tanh(nn.Dense(self.width)(x.reshape((x.shape[0], -1)))))


@dataclass(frozen=True)
class TinyConfig(ModelConfig):
    name: str = "tiny"
    width: int = 6


def sorted_names(sums: dict) -> list[str]:
    """The four IDX file names in SPLIT_KEYS order (train images/labels, test images/labels)."""
    order = ("train-images", "train-labels", "t10k-images", "t10k-labels")
    return [next(n for n in sums if n.startswith(prefix)) for prefix in order]


@pytest.fixture
def extended(tmp_path):
    project = copy_project(tmp_path / "project")
    folder = project / "data/01_raw/shapes"
    sums = write_idx(folder, "shapes", 40, 20, seed=3, shape=(6, 6), num_classes=4)
    register_model("tiny", TinyConfig, lambda config: Tiny(config.width))
    register_dataset(
        DatasetSpec(
            name="shapes",
            reader="idx",
            image_shape=(6, 6, 1),
            classes=("circle", "square", "star", "ring"),
            num_train=40,
            num_test=20,
            files=tuple(
                FileRole(role, (RawFile(name, (sums[name],)),))
                for role, name in zip(SPLIT_KEYS, sorted_names(sums), strict=True)
            ),
        )
    )
    try:
        yield project
    finally:
        unregister_model("tiny")
        unregister_dataset("shapes")


def test_new_model_and_dataset_run_ntk_spectrum(extended, monkeypatch):
    monkeypatch.chdir(extended)  # the catalog's paths are relative to the project
    bootstrap_project(extended)
    params = {
        "model": "tiny",
        "models": {"tiny": {"name": "tiny", "activation": "tanh", "width": 6}},
        "data": {"dataset": "shapes", "download": "never"},
        "ntk": {"num_eigvecs": 5, "progress": False},
    }
    with KedroSession.create(project_path=extended, env="test", runtime_params=params) as session:
        session.run(pipeline_names=["ntk_spectrum"])
    folder = extended / "data/05_model_input/shapes/tiny/ntk_eigenvalues.npy"
    (version,) = [p for p in folder.iterdir() if p.is_dir()]
    values = np.load(version / folder.name)
    assert values.shape == (5,) and np.all(values > 0) and np.all(np.diff(values) <= 0)
    # Negative control: without its one definition the model is unknown, before any work.
    unregister_model("tiny")
    with pytest.raises(Exception, match="(?s)Unknown model 'tiny'.*lenet"):
        with KedroSession.create(extended, env="test", runtime_params=params) as session:
            session.run(pipeline_names=["ntk_spectrum"])
    register_model("tiny", TinyConfig, lambda config: Tiny(config.width))  # for the teardown
