"""Nodes of ``data``: unpack the ``data:`` parameters and call ``core.data`` (SPEC §1.1)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linearized_kedro.core.config import dataclass_from_mapping  # noqa: E402
from linearized_kedro.core.data import prepare_dataset, resolve_subset_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataParams:
    """``data:`` parameters (``conf/base/parameters.yml``).

    Attributes:
        dataset: cifar10 | mnist | fashion_mnist | digits.
        num_train: Training rows: null → ``subset_sizes[dataset][0]``, -1 → all, else a
            stratified seeded subset of that size.
        num_test: Test rows, as ``num_train``.
        subset_sizes: ``{dataset: [num_train, num_test]}`` defaults.
        subset_seed: ``random_state`` of the stratified subsets (SPEC §1.1: seed + 999).
        normalize: Per-channel standardisation with training statistics.
        download: auto | always | never (read by the catalog's ``raw_images``).
    """

    dataset: str = "cifar10"
    num_train: int | None = None
    num_test: int | None = None
    subset_sizes: dict = field(default_factory=dict)
    subset_seed: int = 1041
    normalize: bool = True
    download: str = "auto"

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | DataParams) -> DataParams:
        """Accepts the dataclass (Kedro's typed params) or a plain mapping (tests, notebooks)."""
        return dataclass_from_mapping(cls, value, "data")

    def default_sizes(self) -> tuple[int, int]:
        """``subset_sizes[dataset]`` as (num_train, num_test); (-1, -1) when not listed."""
        sizes = (self.subset_sizes or {}).get(self.dataset, (-1, -1))
        if len(sizes) != 2:
            raise ValueError(
                f"data.subset_sizes.{self.dataset} must be [num_train, num_test]; got {sizes!r}."
            )
        return int(sizes[0]), int(sizes[1])


def load_and_prepare_data(
    raw_images: dict[str, Any], data: DataParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Subsets, scales, normalises and concatenates the raw splits (train rows first).

    Args:
        raw_images: ``RawImageDataset`` output (uint8 (N,H,W,C) images, int labels).
        data: The ``data:`` parameters.

    Returns:
        ``prepared_inputs`` (N, H, W, C) float32, ``prepared_labels`` (N,) int64 original
        classes, ``sample_index`` (N,) int64 positions in the official order (train split
        then test split), and ``data_report`` (sizes, statistics, class counts, files).
    """
    params = DataParams.from_value(data)
    name = raw_images.get("name")
    if name != params.dataset:
        raise ValueError(
            f"The catalog read {name!r} but data.dataset is {params.dataset!r}. Pass the "
            f"dataset with --params data.dataset={params.dataset} so that the catalog's "
            "paths (runtime_params) and the parameters agree."
        )
    default_train, default_test = params.default_sizes()
    available_train = int(len(raw_images["train_labels"]))
    available_test = int(len(raw_images["test_labels"]))
    num_train = resolve_subset_size(params.num_train, default_train, available_train, "train")
    num_test = resolve_subset_size(params.num_test, default_test, available_test, "test")
    prepared = prepare_dataset(
        raw_images["train_images"],
        raw_images["train_labels"],
        raw_images["test_images"],
        raw_images["test_labels"],
        num_train=num_train,
        num_test=num_test,
        subset_seed=params.subset_seed,
        normalize=params.normalize,
        max_value=float(raw_images.get("max_value", 255)),
    )
    classes = list(raw_images.get("classes") or [])
    num_classes = max(len(classes), int(prepared.labels.max()) + 1)
    report = {
        "dataset": params.dataset,
        "num_train": prepared.num_train,
        "num_test": prepared.num_test,
        "available_train": available_train,
        "available_test": available_test,
        "input_shape": list(prepared.inputs.shape[1:]),
        "normalize": params.normalize,
        "mean": [float(v) for v in prepared.mean],
        "std": [float(v) for v in prepared.std],
        "max_value": float(raw_images.get("max_value", 255)),
        "subset_seed": int(params.subset_seed),
        "classes": classes,
        "class_counts": {
            "train": np.bincount(prepared.labels[: prepared.num_train], minlength=num_classes)
            .astype(int)
            .tolist(),
            "test": np.bincount(prepared.labels[prepared.num_train :], minlength=num_classes)
            .astype(int)
            .tolist(),
        },
        "files": dict(raw_images.get("files") or {}),
    }
    logger.info(
        "data: %s, %d train + %d test rows, input shape %s",
        params.dataset,
        prepared.num_train,
        prepared.num_test,
        report["input_shape"],
    )
    return prepared.inputs, prepared.labels, prepared.sample_index, report
