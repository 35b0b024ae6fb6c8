"""Kedro dataset classes: every artifact atomic, verified on load, committed per run.

Versioned artifacts (all built on :class:`ArtifactDataset`):

- :class:`NumpyDataset` (``.npy``), :class:`FlaxParamsDataset` (Flax msgpack),
- :class:`JSONDataset`, :class:`TextDataset`, :class:`CSVDataset` (pandas),
- :class:`FigureDataset` (matplotlib → PNG/PDF/SVG), :class:`PlotlyDataset` (Plotly JSON).

Also :class:`GramBlockStoreDataset` (resumable NTK Gram tiles shared under leases) and
:class:`RawImageDataset` (the official raw files).
"""

from linearized_kedro.datasets.arrays import NumpyDataset
from linearized_kedro.datasets.atomic import StorageFullError
from linearized_kedro.datasets.base import ArtifactDataset
from linearized_kedro.datasets.documents import CSVDataset, JSONDataset, TextDataset
from linearized_kedro.datasets.gram_blocks import GramBlockStoreDataset
from linearized_kedro.datasets.integrity import IntegrityError
from linearized_kedro.datasets.metadata import (
    read_sidecar,
    run_metadata,
    set_run_metadata,
    write_sidecar,
)
from linearized_kedro.datasets.params import FlaxParamsDataset
from linearized_kedro.datasets.plots import FigureDataset, PlotlyDataset
from linearized_kedro.datasets.raw import DATASET_NAMES, RawImageDataset, load_raw_dataset

__all__ = [
    "DATASET_NAMES",
    "ArtifactDataset",
    "CSVDataset",
    "FigureDataset",
    "FlaxParamsDataset",
    "GramBlockStoreDataset",
    "IntegrityError",
    "JSONDataset",
    "NumpyDataset",
    "PlotlyDataset",
    "RawImageDataset",
    "StorageFullError",
    "TextDataset",
    "load_raw_dataset",
    "read_sidecar",
    "run_metadata",
    "set_run_metadata",
    "write_sidecar",
]
