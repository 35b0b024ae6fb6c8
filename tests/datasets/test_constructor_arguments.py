"""Kedro records every dataset's named constructor arguments (what `kedro catalog
resolve-patterns` and Kedro-Viz print), for every project dataset class."""

from __future__ import annotations

import pytest

from linearized_kedro import datasets
from linearized_kedro.datasets.base import ArtifactDataset

CLASSES = sorted(
    {
        getattr(datasets, name)
        for name in dir(datasets)
        if isinstance(getattr(datasets, name), type)
        and issubclass(getattr(datasets, name), ArtifactDataset)
        and getattr(datasets, name) is not ArtifactDataset
    },
    key=lambda cls: cls.__name__,
)


def test_every_artifact_class_is_covered():
    names = {cls.__name__ for cls in CLASSES}
    assert {"NumpyDataset", "JSONDataset", "CSVDataset", "FigureDataset", "PlotlyDataset"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_named_arguments_are_recorded(cls, tmp_path):
    dataset = cls(filepath=str(tmp_path / "artifact.bin"), save_args={"x": 1})
    recorded = dataset._init_args
    assert "args" not in recorded and "kwargs" not in recorded, recorded
    assert recorded["filepath"].endswith("artifact.bin") and recorded["save_args"] == {"x": 1}
