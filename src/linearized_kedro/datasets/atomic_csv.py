"""A CSV dataset whose saves are atomic, for partitions written by concurrent jobs."""

from __future__ import annotations

import io

import pandas as pd
from kedro.io.core import get_filepath_str
from kedro_datasets.pandas import CSVDataset

from linearized_kedro.datasets.metadata import atomic_write_bytes


class AtomicCSVDataset(CSVDataset):
    """``pandas.CSVDataset`` whose saves are atomic (temporary sibling + rename).

    Jobs of a partitioned sweep write beside each other while a merge may be listing
    the folder; a reader sees a partition whole or not at all (temporary names end in
    ``.partial``, which the ``.csv`` suffix filter of the PartitionedDataset skips).
    """

    def save(self, data: pd.DataFrame) -> None:
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        buffer = io.StringIO()
        data.to_csv(path_or_buf=buffer, **self._save_args)
        atomic_write_bytes(self._fs, save_path, buffer.getvalue().encode("utf-8"))
        self._invalidate_cache()
