"""The prepared data set every experiment starts from (docs/methods.md §1.1).

Official train and test splits → stratified seeded subsets → pixels scaled to [0, 1] →
per-channel standardisation with training statistics → train rows then test rows, with the
position of every row in the official order (the eigenvectors are indexed by it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from linearized_kedro.core.config import Config, ConfigError
from linearized_kedro.core.data import PreparedData, prepare_dataset, resolve_subset_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig(Config):
    """``data:`` parameters (``conf/base/parameters.yml``).

    Attributes:
        dataset: a registered dataset name (cifar10, mnist, fashion_mnist, digits, ...).
        num_train: training rows: null → ``subset_sizes[dataset][0]``, -1 → the whole split,
            else a stratified seeded subset of that size.
        num_test: test rows, as ``num_train``.
        subset_sizes: ``{dataset: [num_train, num_test]}`` laptop defaults.
        subset_seed: ``random_state`` of the stratified subsets (docs/methods.md §1.1: seed + 999).
        normalize: per-channel standardisation with training statistics.
        download: auto | always | never (read by the catalog's raw dataset).
    """

    SECTION: ClassVar[str] = "data"

    dataset: str = "cifar10"
    num_train: int | None = None
    num_test: int | None = None
    subset_sizes: dict = field(default_factory=dict)
    subset_seed: int = 1041
    normalize: bool = True
    download: Literal["auto", "always", "never"] = "auto"

    def validate(self) -> None:
        for split in ("num_train", "num_test"):
            value = getattr(self, split)
            if value is not None and value != -1 and value < 1:
                raise ConfigError(
                    f"data.{split}={value} is invalid: use a positive count, -1 (all) or null."
                )
        for name, sizes in self.subset_sizes.items():
            if not isinstance(sizes, list | tuple) or len(sizes) != 2:
                raise ConfigError(
                    f"data.subset_sizes.{name} must be [num_train, num_test]; got {sizes!r}."
                )

    def default_sizes(self) -> tuple[int, int]:
        """``subset_sizes[dataset]`` as (num_train, num_test); (-1, -1) when not listed."""
        sizes = self.subset_sizes.get(self.dataset, (-1, -1))
        return int(sizes[0]), int(sizes[1])

    def sizes(self, available_train: int, available_test: int) -> tuple[int, int]:
        """The resolved (num_train, num_test) for splits of the given sizes."""
        default_train, default_test = self.default_sizes()
        return (
            resolve_subset_size(self.num_train, default_train, available_train, "train"),
            resolve_subset_size(self.num_test, default_test, available_test, "test"),
        )


def prepare_data(raw: dict[str, Any], config: DataConfig) -> tuple[PreparedData, dict[str, Any]]:
    """Prepared arrays and their report from the raw splits.

    Args:
        raw: what ``RawImageDataset`` loads: ``name``, ``train_images`` (N_tr, H, W, C) uint8,
            ``train_labels`` (N_tr,), ``test_images``, ``test_labels``, ``classes``,
            ``max_value``, ``files``.
        config: the ``data:`` parameters.

    Returns:
        The ``PreparedData`` (inputs (N, H, W, C) float32 train rows first, labels (N,),
        sample_index (N,), sizes, statistics) and a JSON-friendly report.
    """
    if raw.get("name") != config.dataset:
        raise ConfigError(
            f"The catalog read {raw.get('name')!r} but data.dataset is {config.dataset!r}. "
            f"Pass the dataset with --params data.dataset={config.dataset} so that the "
            "catalog's paths (runtime_params) and the parameters agree."
        )
    available = (int(len(raw["train_labels"])), int(len(raw["test_labels"])))
    num_train, num_test = config.sizes(*available)
    max_value = float(raw.get("max_value", 255))
    prepared = prepare_dataset(
        raw["train_images"],
        raw["train_labels"],
        raw["test_images"],
        raw["test_labels"],
        num_train=num_train,
        num_test=num_test,
        subset_seed=config.subset_seed,
        normalize=config.normalize,
        max_value=max_value,
    )
    classes = list(raw.get("classes") or [])
    num_classes = max(len(classes), int(prepared.labels.max()) + 1)
    counts = {
        split: np.bincount(labels, minlength=num_classes).astype(int).tolist()
        for split, labels in (
            ("train", prepared.labels[: prepared.num_train]),
            ("test", prepared.labels[prepared.num_train :]),
        )
    }
    report = {
        "dataset": config.dataset,
        "num_train": prepared.num_train,
        "num_test": prepared.num_test,
        "available_train": available[0],
        "available_test": available[1],
        "input_shape": list(prepared.inputs.shape[1:]),
        "normalize": config.normalize,
        "mean": [float(v) for v in prepared.mean],
        "std": [float(v) for v in prepared.std],
        "max_value": max_value,
        "subset_seed": int(config.subset_seed),
        "classes": classes,
        "num_classes": num_classes,
        "class_counts": counts,
        "files": dict(raw.get("files") or {}),
    }
    logger.info(
        "data: %s, %d train + %d test rows, input shape %s",
        config.dataset,
        prepared.num_train,
        prepared.num_test,
        report["input_shape"],
    )
    return prepared, report
