"""FigureDataset (matplotlib PNG/PDF) and PlotlyDataset: bytes back, Kedro-Viz preview types."""

from __future__ import annotations

import base64
import inspect

import matplotlib

matplotlib.use("Agg")  # tests only; the project chooses no backend at import

import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
from kedro.io.core import DatasetError, Version  # noqa: E402

from linearized_kedro.datasets import FigureDataset, PlotlyDataset  # noqa: E402
from linearized_kedro.datasets.metadata import read_sidecar  # noqa: E402

V1, V2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def test_png_load_returns_the_stored_bytes(tmp_path):
    fig = _figure()
    dataset = FigureDataset(filepath=str(tmp_path / "s.png"), save_args={"dpi": 50})
    dataset.save(fig)
    payload = dataset.load()
    assert payload.startswith(b"\x89PNG\r\n\x1a\n")
    assert base64.b64decode(dataset.preview()) == payload
    assert read_sidecar(str(tmp_path / "s.png"))["artifact"]["image_format"] == "png"
    plt.close(fig)


def test_pdf_is_reproducible_and_deduplicated(tmp_path):
    fig = _figure()
    path = tmp_path / "s.pdf"
    for version in (V1, V2):
        dataset = FigureDataset(
            filepath=str(path), version=Version(None, version), deduplicate=True
        )
        dataset.save(fig)
    first, second = path / V1 / "s.pdf", path / V2 / "s.pdf"
    assert first.read_bytes().startswith(b"%PDF")
    assert first.stat().st_ino == second.stat().st_ino  # same bytes: no creation date
    plt.close(fig)


def test_unknown_extension_and_non_figures_are_refused(tmp_path):
    fig = _figure()
    with pytest.raises(DatasetError, match="figure format"):
        FigureDataset(filepath=str(tmp_path / "s.bmpx")).save(fig)
    with pytest.raises(DatasetError, match="matplotlib Figure"):
        FigureDataset(filepath=str(tmp_path / "s.png")).save({"not": "a figure"})
    plt.close(fig)


def test_plotly_round_trip_and_interactive_preview(tmp_path):
    figure = go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="λ"))
    dataset = PlotlyDataset(filepath=str(tmp_path / "f.json"), version=Version(None, V1))
    dataset.save(figure)
    loaded = dataset.load()
    assert isinstance(loaded, go.Figure)
    assert list(loaded.data[0].y) == [3, 4] and loaded.data[0].name == "λ"
    preview = dataset.preview()
    assert preview["data"][0]["x"] == [1, 2]
    annotation = inspect.signature(PlotlyDataset.preview).return_annotation
    assert getattr(annotation, "__name__", str(annotation)) == "PlotlyPreview"
    annotation = inspect.signature(FigureDataset.preview).return_annotation
    assert getattr(annotation, "__name__", str(annotation)) == "ImagePreview"


def test_plotly_accepts_a_json_dict_and_refuses_other_things(tmp_path):
    dataset = PlotlyDataset(filepath=str(tmp_path / "f.json"))
    dataset.save({"data": [{"type": "bar", "y": [1]}], "layout": {}})
    assert dataset.load().data[0].type == "bar"
    with pytest.raises(DatasetError, match="Plotly figure"):
        PlotlyDataset(filepath=str(tmp_path / "g.json")).save([1, 2])
