"""ArtifactDataset versions: latest = latest complete, pins, integrity on load, deduplication."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kedro.io.core import AbstractDataset, DatasetError, Version, VersionNotFoundError

from linearized_kedro.datasets import IntegrityError, JSONDataset, NumpyDataset
from linearized_kedro.datasets.integrity import forget_verifications
from linearized_kedro.datasets.metadata import is_committed, read_sidecar

V1, V2, V3 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"


def _bound(path, run_id, load=None, cls=NumpyDataset, **kw):
    """A dataset bound to run ``run_id`` as RunsHook binds it (saves are not self-committed)."""
    dataset = cls(filepath=str(path), version=Version(load, None), **kw)
    dataset.bind_run(run_id)
    return dataset


def _committed_run(path, run_id, value, **kw):
    dataset = _bound(path, run_id, **kw)
    dataset.save(value)
    assert dataset.commit(run_id, {"run_id": run_id})
    return dataset


def test_latest_skips_a_killed_runs_version(tmp_path):
    path = tmp_path / "eigenvalues.npy"
    _committed_run(path, V1, np.ones(3))
    _bound(path, V2).save(np.full(3, 7.0))  # the run died before committing
    reader = NumpyDataset(filepath=str(path), version=Version(None, None))
    np.testing.assert_array_equal(reader.load(), np.ones(3))
    assert reader.version_status() == [(V2, "incomplete"), (V1, "complete")]
    # Negative control: once V2's run commits, it is the latest.
    assert _bound(path, V2).commit(V2, {"run_id": V2})
    np.testing.assert_array_equal(
        NumpyDataset(filepath=str(path), version=Version(None, None)).load(), np.full(3, 7.0)
    )


def test_a_run_sees_its_own_uncommitted_version(tmp_path):
    path = tmp_path / "x.npy"
    _committed_run(path, V1, np.ones(2))
    own = _bound(path, V2)
    own.save(np.zeros(2))
    np.testing.assert_array_equal(own.load(), np.zeros(2))
    other = _bound(path, V3)
    np.testing.assert_array_equal(other.load(), np.ones(2))
    # A run's own version wins over a newer one another run committed meanwhile.
    _committed_run(path, V3, np.full(2, 5.0))
    own._release()
    np.testing.assert_array_equal(own.load(), np.zeros(2))


def test_only_incomplete_versions_is_a_clear_error(tmp_path):
    path = tmp_path / "x.npy"
    _bound(path, V1).save(np.ones(2))
    reader = NumpyDataset(filepath=str(path), version=Version(None, None))
    with pytest.raises(VersionNotFoundError, match=r"No complete version .* killed, failed"):
        reader.load()
    assert not reader.exists()


def test_pinned_version_that_does_not_exist_lists_what_exists(tmp_path):
    path = tmp_path / "x.npy"
    _committed_run(path, V1, np.ones(2))
    _bound(path, V2).save(np.ones(2))
    pinned = NumpyDataset(filepath=str(path), version=Version("1999-01-01T00.00.00.000Z", None))
    with pytest.raises(VersionNotFoundError) as info:
        pinned.load()
    message = str(info.value)
    assert "1999-01-01T00.00.00.000Z" in message
    assert f"{V2} (incomplete), {V1} (complete)" in message


def test_pinned_incomplete_version_loads_when_asked_explicitly(tmp_path):
    path = tmp_path / "x.npy"
    _committed_run(path, V1, np.ones(2))
    _bound(path, V2).save(np.zeros(2))
    pinned = NumpyDataset(filepath=str(path), version=Version(V2, None))
    np.testing.assert_array_equal(pinned.load(), np.zeros(2))


def test_standalone_saves_commit_themselves(tmp_path):
    path = tmp_path / "x.npy"
    dataset = NumpyDataset(filepath=str(path), version=Version(None, V1))
    dataset.save(np.ones(2))
    assert is_committed(dataset._fs, dataset.version_path(V1))
    assert read_sidecar(dataset.version_path(V1))["run_id"] is None


def _flip_one_byte(path):
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0x01
    path.write_bytes(bytes(payload))


def test_flipped_byte_is_refused_naming_the_file_and_the_fix(tmp_path):
    path = tmp_path / "eigenvalues.npy"
    _committed_run(path, V1, np.linspace(1.0, 2.0, 50))
    stored = path / V1 / "eigenvalues.npy"
    reader = NumpyDataset(filepath=str(path), version=Version(None, None))
    np.testing.assert_allclose(reader.load()[-1], 2.0)  # negative control: intact loads
    _flip_one_byte(stored)
    forget_verifications()
    with pytest.raises(IntegrityError) as info:
        NumpyDataset(filepath=str(path), version=Version(None, None)).load()
    message = str(info.value)
    assert str(stored) in message and "SHA-256" in message
    assert "delete the version folder" in message and "--load-versions" in message


def test_size_change_is_refused_without_hashing(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    dataset = JSONDataset(filepath=str(path), version=Version(None, V1))
    dataset.save({"a": 1})
    with open(path / V1 / "r.json", "ab") as handle:
        handle.write(b" ")
    from linearized_kedro.datasets import integrity

    monkeypatch.setattr(integrity, "sha256_file", lambda *a: pytest.fail("hashed"))
    with pytest.raises(IntegrityError, match="bytes instead of the"):
        JSONDataset(filepath=str(path), version=Version(None, None)).load()


def test_verification_is_cached_per_file_state(tmp_path, monkeypatch):
    path = tmp_path / "x.npy"
    _committed_run(path, V1, np.arange(10.0))
    from linearized_kedro.datasets import integrity

    forget_verifications()
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        NumpyDataset(filepath=str(path), version=Version(None, None)).load()
    assert len(calls) == 1


def test_identical_bytes_are_stored_once_as_a_hard_link(tmp_path):
    path = tmp_path / "prepared_inputs.npy"
    array = np.arange(1000, dtype=np.float32)
    _committed_run(path, V1, array, deduplicate=True)
    _committed_run(path, V2, array, deduplicate=True)
    first, second = path / V1 / path.name, path / V2 / path.name
    assert first.stat().st_ino == second.stat().st_ino and second.stat().st_nlink == 2
    meta = read_sidecar(str(second))
    assert meta["artifact"]["same_content_as"] == V1 and meta["artifact"]["version"] == V2
    # Negative controls: different bytes are a new file; so is anything not deduplicated.
    _committed_run(path, V3, array + 1, deduplicate=True)
    assert (path / V3 / path.name).stat().st_nlink == 1
    other = tmp_path / "eigenvalues.npy"
    _committed_run(other, V1, array)
    _committed_run(other, V2, array)
    assert (other / V2 / other.name).stat().st_nlink == 1


def test_identical_bytes_are_linked_without_writing_a_byte(tmp_path, monkeypatch):
    from linearized_kedro.datasets import atomic

    path = tmp_path / "prepared_inputs.npy"
    array = np.arange(1000, dtype=np.float32)
    _committed_run(path, V1, array, deduplicate=True)

    write = atomic.HashingWriter.write

    def no_array_writes(self, data):  # sidecars and commit records are still written
        if self.path.endswith("/" + path.name):
            raise AssertionError("a stored file was written")
        return write(self, data)

    monkeypatch.setattr(atomic.HashingWriter, "write", no_array_writes)
    _committed_run(path, V2, array, deduplicate=True)  # digest only, then a hard link
    assert (path / V2 / path.name).stat().st_ino == (path / V1 / path.name).stat().st_ino
    assert not list(path.rglob("*" + atomic.PARTIAL_SUFFIX))
    np.testing.assert_array_equal(_bound(path, V3, load=V2).load(), array)
    # Negative control: new bytes must be written, and are.
    with pytest.raises(DatasetError, match="a stored file was written"):
        _committed_run(path, V3, array + 1, deduplicate=True)


def test_damage_to_shared_bytes_names_every_version_that_shares_them(tmp_path):
    path = tmp_path / "prepared_inputs.npy"
    array = np.arange(100, dtype=np.float32)
    for version in (V1, V2, V3):
        _committed_run(path, version, array, deduplicate=True)
    _flip_one_byte(path / V3 / path.name)
    forget_verifications()
    with pytest.raises(IntegrityError) as info:
        NumpyDataset(filepath=str(path), version=Version(None, None)).load()
    assert f"shared (deduplicated) with version(s) {V2}, {V1}" in str(info.value)


def test_a_corrupted_version_is_never_linked_to(tmp_path):
    path = tmp_path / "x.npy"
    array = np.arange(100, dtype=np.float32)
    _committed_run(path, V1, array, deduplicate=True)
    _flip_one_byte(path / V1 / path.name)
    forget_verifications()
    _committed_run(path, V2, array, deduplicate=True)
    assert (path / V2 / path.name).stat().st_nlink == 1
    np.testing.assert_array_equal(_bound(path, V3, load=V2).load(), array)


def test_catalog_config_constructs_every_class_versioned(tmp_path):
    for type_, name in [
        ("linearized_kedro.datasets.NumpyDataset", "a.npy"),
        ("linearized_kedro.datasets.FlaxParamsDataset", "a.msgpack"),
        ("linearized_kedro.datasets.JSONDataset", "a.json"),
        ("linearized_kedro.datasets.CSVDataset", "a.csv"),
        ("linearized_kedro.datasets.TextDataset", "a.txt"),
        ("linearized_kedro.datasets.FigureDataset", "a.png"),
        ("linearized_kedro.datasets.PlotlyDataset", "a.plotly.json"),
    ]:
        config = {
            "type": type_,
            "filepath": str(tmp_path / name),
            "versioned": True,
            "load_args": {},
            "save_args": {},
            "credentials": None,
            "fs_args": {},
            "metadata": {"kedro-viz": {"layer": "reporting"}},
        }
        dataset = AbstractDataset.from_config(name, config, None, V1)
        assert dataset.resolve_save_version() == V1
        assert dataset.metadata == {"kedro-viz": {"layer": "reporting"}}
    with pytest.raises(DatasetError, match="unexpected keyword|bogus"):
        AbstractDataset.from_config(
            "bad", {"type": "linearized_kedro.datasets.JSONDataset", "filepath": "x", "bogus": 1}
        )


def test_versioned_save_never_overwrites(tmp_path):
    path = tmp_path / "r.json"
    JSONDataset(filepath=str(path), version=Version(None, V1)).save({"a": 1})
    with pytest.raises(DatasetError, match="must not exist"):
        JSONDataset(filepath=str(path), version=Version(None, V1)).save({"a": 2})
    assert json.loads((path / V1 / "r.json").read_text()) == {"a": 1}
