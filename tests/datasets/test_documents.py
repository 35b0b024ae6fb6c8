"""JSON, text and CSV datasets: round trips, kedro-datasets defaults, previews, refusals."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError, Version
from kedro_datasets.json import JSONDataset as KedroJSONDataset
from kedro_datasets.pandas import CSVDataset as KedroCSVDataset

from linearized_kedro.datasets import CSVDataset, JSONDataset, TextDataset
from linearized_kedro.datasets.atomic_csv import AtomicCSVDataset
from linearized_kedro.datasets.metadata import read_sidecar

V1 = "2026-01-01T00.00.00.000Z"


def test_json_round_trip_converts_numpy_and_records_the_type(tmp_path):
    dataset = JSONDataset(filepath=str(tmp_path / "r.json"), version=Version(None, V1))
    dataset.save({"n": np.int64(3), "values": np.arange(3.0), "shape": (2, 2)})
    assert dataset.load() == {"n": 3, "values": [0.0, 1.0, 2.0], "shape": [2, 2]}
    stored = tmp_path / "r.json" / V1 / "r.json"
    assert stored.read_text().startswith('{\n  "n": 3')  # kedro-datasets' default indent 2
    assert read_sidecar(str(stored))["artifact"]["type"] == "dict"
    assert json.loads(dataset.preview()) == dataset.load()


def test_json_same_bytes_as_kedro_datasets(tmp_path):
    data = {"b": [1, 2], "a": {"x": 0.5}}
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    JSONDataset(filepath=str(ours)).save(data)
    KedroJSONDataset(filepath=str(theirs)).save(data)
    assert ours.read_bytes() == theirs.read_bytes()


def test_json_refuses_what_json_cannot_hold(tmp_path):
    dataset = JSONDataset(filepath=str(tmp_path / "r.json"))
    with pytest.raises(DatasetError, match="as JSON"):
        dataset.save({"x": _Opaque()})
    assert not (tmp_path / "r.json").exists()


class _Opaque:
    __slots__ = ()


def test_csv_round_trip_matches_kedro_datasets(tmp_path):
    table = pd.DataFrame({"label_idx": [1, 5], "kind": ["network", "linear"], "acc": [0.5, 0.75]})
    ours, theirs = tmp_path / "ours.csv", tmp_path / "theirs.csv"
    CSVDataset(filepath=str(ours)).save(table)
    KedroCSVDataset(filepath=str(theirs), save_args={"index": False}).save(table)
    assert ours.read_bytes() == theirs.read_bytes()
    pd.testing.assert_frame_equal(CSVDataset(filepath=str(ours)).load(), table)
    loaded = CSVDataset(filepath=str(ours), load_args={"usecols": ["acc"]}).load()
    assert list(loaded.columns) == ["acc"]
    preview = CSVDataset(filepath=str(ours)).preview(nrows=1)
    assert preview["columns"] == ["label_idx", "kind", "acc"] and len(preview["data"]) == 1
    assert read_sidecar(str(ours))["artifact"]["rows"] == 2


def test_csv_refuses_non_tables(tmp_path):
    with pytest.raises(DatasetError, match="pandas DataFrame"):
        CSVDataset(filepath=str(tmp_path / "a.csv")).save([1, 2])


def test_text_round_trip_and_refusal(tmp_path):
    dataset = TextDataset(filepath=str(tmp_path / "s.md"), version=Version(None, V1))
    dataset.save("# Summary\nλ = 1\n")
    assert dataset.load() == "# Summary\nλ = 1\n"
    with pytest.raises(DatasetError, match="pass a str"):
        TextDataset(filepath=str(tmp_path / "t.md")).save(b"bytes")


def test_preview_types_are_what_kedro_viz_reads():
    def preview_type(cls):
        annotation = inspect.signature(cls.preview).return_annotation
        return getattr(annotation, "__name__", str(annotation))

    assert preview_type(JSONDataset) == "JSONPreview"
    assert preview_type(CSVDataset) == "TablePreview"


def test_partition_csv_is_replaced_atomically_and_skipped_by_the_suffix_filter(tmp_path):
    path = tmp_path / "part-000-of-002.csv"
    AtomicCSVDataset(filepath=str(path)).save(pd.DataFrame({"a": [1]}))
    AtomicCSVDataset(filepath=str(path)).save(pd.DataFrame({"a": [2]}))
    assert AtomicCSVDataset(filepath=str(path)).load()["a"].tolist() == [2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".csv")) == [path.name]
