"""Kedro dataset classes: versioned arrays, Flax variables, official raw image files."""

from linearized_kedro.datasets.arrays import NumpyDataset
from linearized_kedro.datasets.metadata import (
    read_sidecar,
    run_metadata,
    set_run_metadata,
    write_sidecar,
)
from linearized_kedro.datasets.params import FlaxParamsDataset
from linearized_kedro.datasets.raw import DATASET_NAMES, RawImageDataset, load_raw_dataset

__all__ = [
    "DATASET_NAMES",
    "FlaxParamsDataset",
    "NumpyDataset",
    "RawImageDataset",
    "load_raw_dataset",
    "read_sidecar",
    "run_metadata",
    "set_run_metadata",
    "write_sidecar",
]
