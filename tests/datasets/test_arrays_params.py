"""NumpyDataset / FlaxParamsDataset: round trips, versions, sidecars, refusals, atomic saves."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from kedro.io.core import DatasetError, Version

from linearized_kedro.datasets import (
    FlaxParamsDataset,
    NumpyDataset,
    read_sidecar,
    set_run_metadata,
)
from linearized_kedro.datasets.metadata import library_versions, run_metadata

SETTINGS = {"model": "mlp", "dataset": "digits", "seed": 42}


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.array([3, -1, 7], dtype=np.int64),
        np.array([True, False]),
        np.zeros((0, 5)),
    ],
)
def test_numpy_round_trip_exact(tmp_path, array):
    dataset = NumpyDataset(filepath=str(tmp_path / "a.npy"))
    dataset.save(array)
    loaded = dataset.load()
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_numpy_versioned_sidecar_and_preview(tmp_path):
    dataset = NumpyDataset(filepath=str(tmp_path / "x.npy"), version=Version(None, None))
    array = np.arange(12.0).reshape(3, 4)
    dataset.set_provenance(SETTINGS)
    dataset.save(array)
    (version_dir,) = (tmp_path / "x.npy").iterdir()
    saved = version_dir / "x.npy"
    # A save outside a Kedro run is a unit of its own: committed at once.
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "x.npy",
        "x.npy.commit.json",
        "x.npy.meta.json",
    ]
    meta = read_sidecar(str(saved))
    assert meta == dataset.load_metadata()
    assert meta["artifact"]["shape"] == [3, 4] and meta["artifact"]["dtype"] == "float64"
    assert meta["artifact"]["version"] == version_dir.name
    import hashlib

    assert meta["artifact"]["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert meta["seed"] == 42 and meta["model"] == "mlp" and meta["run_id"] is None
    assert meta["artifact"]["size"] == saved.stat().st_size
    assert meta["library_versions"]["jax"] == library_versions()["jax"] is not None
    assert "git_commit" in meta and "timestamp" in meta
    preview = json.loads(dataset.preview())
    assert preview["shape"] == [3, 4] and preview["head"][:3] == [0.0, 1.0, 2.0]


def test_numpy_two_versions_coexist(tmp_path):
    path = str(tmp_path / "x.npy")
    NumpyDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(np.ones(2))
    NumpyDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(np.zeros(2))
    latest = NumpyDataset(filepath=path, version=Version(None, None)).load()
    first = NumpyDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    np.testing.assert_array_equal(latest, np.zeros(2))
    np.testing.assert_array_equal(first, np.ones(2))


def test_numpy_refuses_object_arrays_and_keeps_old_file(tmp_path):
    path = tmp_path / "a.npy"
    dataset = NumpyDataset(filepath=str(path))
    dataset.save(np.arange(3))
    before = path.read_bytes()
    with pytest.raises(DatasetError, match="object arrays need pickle"):
        dataset.save(np.array([1, "a", None], dtype=object))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.meta.json"]


def test_numpy_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    dataset = NumpyDataset(filepath=str(path))
    dataset.save(np.arange(3))
    before = path.read_bytes()

    def broken_save(handle, array, allow_pickle):
        handle.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(np.arange(1000))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "a.npy.meta.json"]


def test_numpy_load_refuses_pickled_file(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="allow_pickle"):
        NumpyDataset(filepath=str(path)).load()


def test_flax_params_round_trip(tmp_path):
    variables = {
        "params": {
            "Dense_0": {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.zeros(2)},
            "Conv_0": {"kernel": np.ones((3, 3, 1, 4), np.float32)},
        },
        "batch_stats": {"BatchNorm_0": {"mean": np.full(4, 0.5), "var": np.ones(4)}},
    }
    dataset = FlaxParamsDataset(filepath=str(tmp_path / "v.msgpack"), version=Version(None, None))
    dataset.save(variables)
    loaded = dataset.load()
    assert set(loaded) == {"params", "batch_stats"}
    for path, ref in [
        (("params", "Dense_0", "kernel"), np.arange(6.0).reshape(3, 2)),
        (("params", "Conv_0", "kernel"), np.ones((3, 3, 1, 4))),
        (("batch_stats", "BatchNorm_0", "mean"), np.full(4, 0.5)),
    ]:
        leaf = loaded[path[0]][path[1]][path[2]]
        assert isinstance(leaf, np.ndarray)
        np.testing.assert_array_equal(leaf, ref)
    assert loaded["params"]["Dense_0"]["kernel"].dtype == np.float32
    meta = dataset.load_metadata()["artifact"]
    assert meta["num_params"] == 6 + 2 + 36  # params only, not batch_stats
    assert meta["shapes"]["params/Conv_0/kernel"] == [3, 3, 1, 4]
    assert json.loads(dataset.preview())["num_leaves"] == 5


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"params": {"w": object()}}, "only numeric arrays"),
        ({"params": {1: np.ones(2)}}, "string keys"),
        ([np.ones(2)], "nested dict"),
    ],
)
def test_flax_params_refuses_non_array_trees(tmp_path, bad, match):
    path = tmp_path / "v.msgpack"
    dataset = FlaxParamsDataset(filepath=str(path))
    dataset.save({"params": {"w": np.ones(2)}})
    before = path.read_bytes()
    with pytest.raises(DatasetError, match=match):
        dataset.save(bad)
    assert path.read_bytes() == before


def test_flax_params_corrupt_file(tmp_path):
    path = tmp_path / "v.msgpack"
    path.write_bytes(b"\xc1 not msgpack")
    with pytest.raises(DatasetError, match="not a valid Flax msgpack"):
        FlaxParamsDataset(filepath=str(path)).load()


def test_run_metadata_contents():
    meta = run_metadata(SETTINGS)
    assert meta["dataset"] == "digits" and meta["seed"] == 42
    assert set(meta["library_versions"]) == {
        "python",
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "numpy",
        "scipy",
        "kedro",
        "linearized_kedro",
    }
    converted = run_metadata({"seed": np.int64(7), "shape": (1, 2)})
    assert converted["seed"] == 7 and converted["shape"] == [1, 2]
    assert "seed" not in run_metadata()  # no state survives between calls


def test_module_global_provenance_is_gone():
    with pytest.raises(RuntimeError, match="ProvenanceHook"):
        set_run_metadata({"seed": 1})


def test_read_sidecar_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="No provenance file"):
        read_sidecar(str(tmp_path / "nothing.npy"))
