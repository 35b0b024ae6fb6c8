"""The ``data`` pipeline on an in-memory catalog: digits (real) and generated CIFAR-10 files."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from official_formats import cifar_splits, write_cifar10_binary

from linearized_kedro.core.config import ConfigError, from_mapping
from linearized_kedro.datasets import RawImageDataset
from linearized_kedro.experiments.data import DataConfig
from linearized_kedro.pipelines.data import create_pipeline
from linearized_kedro.pipelines.data.nodes import prepare

DATA_PARAMS = {
    "dataset": "cifar10",
    "num_train": None,
    "num_test": None,
    "subset_sizes": {"cifar10": [40, 20], "digits": [-1, -1]},
    "subset_seed": 1041,
    "normalize": True,
    "download": "never",
}
OUTPUTS = ("prepared_inputs", "prepared_labels", "prepared_sample_index", "data_report")


def _run(raw_images, data_params):
    catalog = DataCatalog(
        {
            "raw_images": raw_images,
            "params:data": MemoryDataset(from_mapping(DataConfig, data_params)),
            **{name: MemoryDataset() for name in OUTPUTS},
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return {name: catalog.load(name) for name in OUTPUTS}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    sums = write_cifar10_binary(root / "cifar10", 100, 50, seed=11)
    return root, sums


@pytest.fixture(scope="module")
def cifar_raw(cifar_root):
    """The generated CIFAR-10 files as ``raw_images`` loads them."""
    root, sums = cifar_root
    return RawImageDataset(
        dataset="cifar10", root=str(root), download="never", checksums=sums
    ).load()


def _prepare(raw, **changes):
    return prepare(raw, from_mapping(DataConfig, {**DATA_PARAMS, **changes}))


def test_cifar_from_official_files(cifar_root):
    root, sums = cifar_root
    raw = RawImageDataset(dataset="cifar10", root=str(root), download="never", checksums=sums)
    out = _run(raw, DATA_PARAMS)
    x, y, idx, report = (out[k] for k in OUTPUTS)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.float32
    assert y.dtype == np.int64 and idx.dtype == np.int64
    assert report["num_train"] == 40 and report["num_test"] == 20
    assert report["input_shape"] == [32, 32, 3]
    # Train rows first, each split in ascending official order; test positions offset by 100.
    assert np.all(np.diff(idx[:40]) > 0) and idx[:40].max() < 100
    assert np.all(np.diff(idx[40:]) > 0) and idx[40:].min() >= 100
    xtr, ytr, xte, yte = cifar_splits(100, 50, 11)
    np.testing.assert_array_equal(y, np.concatenate([ytr, yte])[idx])
    # Stratified: 10 balanced classes → 4 per class in train, 2 in test.
    assert report["class_counts"] == {"train": [4] * 10, "test": [2] * 10}
    # Normalisation with training statistics (docs/methods.md §1.1): train mean 0 / std 1 per channel.
    np.testing.assert_allclose(x[:40].astype(np.float64).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x[:40].astype(np.float64).std(axis=(0, 1, 2)), 1, atol=1e-5)
    raw_train = xtr[idx[:40]].astype(np.float64) / 255
    np.testing.assert_allclose(report["mean"], raw_train.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(report["std"], raw_train.std(axis=(0, 1, 2)), rtol=1e-6)
    ref_test = (xte[idx[40:] - 100] / 255.0 - report["mean"]) / report["std"]
    np.testing.assert_allclose(x[40:], ref_test, rtol=1e-5, atol=1e-5)
    assert list(report["files"].values()) == list(sums.values())


def test_digits_full_split():
    out = _run(RawImageDataset(dataset="digits"), {**DATA_PARAMS, "dataset": "digits"})
    x, y, idx, report = (out[k] for k in OUTPUTS)
    assert x.shape == (1797, 8, 8, 1)
    assert report["num_train"] == 1437 and report["num_test"] == 360
    np.testing.assert_array_equal(idx, np.arange(1797))
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.testing.assert_array_equal(y, digits.target)
    # /16 scaling (docs/methods.md §2.3), then training statistics.
    pixels = digits.images[:1437] / 16.0
    np.testing.assert_allclose(report["mean"], [pixels.mean()], rtol=1e-6)
    np.testing.assert_allclose(x[:1437].astype(np.float64).mean(), 0, atol=1e-5)
    np.testing.assert_allclose(x[:1437].astype(np.float64).std(), 1, atol=1e-5)


def test_too_many_training_samples(cifar_raw):
    with pytest.raises(ValueError, match="num_train=500 is larger than the 100 train samples"):
        _prepare(cifar_raw, num_train=500)


def test_dataset_mismatch_and_unknown_keys(cifar_raw):
    with pytest.raises(ValueError, match="--params data.dataset=mnist"):
        _prepare(cifar_raw, dataset="mnist")
    with pytest.raises(ConfigError, match="Unknown key\\(s\\) data.nmu_train"):
        from_mapping(DataConfig, {"nmu_train": 3})


def test_full_split_with_minus_one(cifar_raw):
    x, y, idx, report = _prepare(cifar_raw, num_train=-1, num_test=-1)
    np.testing.assert_array_equal(idx, np.arange(150))
    assert report["num_train"] == 100 and x.shape[0] == 150


def _catalog_for(dataset: str) -> DataCatalog:
    """The project's base catalog with ``--params data.dataset=<dataset>``."""
    from pathlib import Path

    from kedro.config import OmegaConfigLoader

    from linearized_kedro.settings import CONFIG_LOADER_ARGS

    # The project's loader settings (its resolvers: ${oc.env:...} in globals.yml).
    loader = OmegaConfigLoader(
        conf_source=str(Path(__file__).resolve().parents[2] / "conf"),
        env="base",
        runtime_params={"data": {"dataset": dataset}},
        **CONFIG_LOADER_ARGS,
    )
    return DataCatalog.from_config(loader["catalog"])


def test_catalog_entries_follow_runtime_dataset(tmp_path):
    catalog = _catalog_for("digits")
    assert isinstance(catalog.get("raw_images"), RawImageDataset)
    assert catalog.get("raw_images")._dataset == "digits"
    for name in OUTPUTS:
        path = str(catalog.get(name)._filepath)
        assert path.endswith(f"digits/{name}.{'json' if name == 'data_report' else 'npy'}")
        assert catalog.get(name)._version is not None  # versioned
    # Negative control: another dataset on the command line gives other paths.
    assert "/mnist/" in str(_catalog_for("mnist").get("prepared_inputs")._filepath)
