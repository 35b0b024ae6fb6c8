"""The CSV dataset of partitioned sweeps (kept for ``type: ...atomic_csv.AtomicCSVDataset``)."""

from __future__ import annotations

from linearized_kedro.datasets.documents import CSVDataset


class AtomicCSVDataset(CSVDataset):
    """``CSVDataset`` for the partitions of a sweep written by concurrent jobs.

    Every project dataset saves atomically (temporary sibling + rename); a reader
    sees a partition whole or not at all, and temporary names end in ``.partial``,
    which the ``.csv`` suffix filter of the PartitionedDataset skips.
    """
