"""The summary grid (figures/summary.py) and saving through the catalog's dataset types."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from figure_data import accuracy, make_alignment, make_table

from linearized_kedro import figures


def _panels(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid() in figures.PANELS}


def test_nothing_run_gives_not_run_panels_with_the_command():
    fig = figures.summary_plot(missing={"cifar2_accuracy": "kedro run --pipelines cifar2"})
    panels = _panels(fig)
    assert list(panels) == list(figures.PANELS)
    for key, ax in panels.items():
        assert not ax.axison
        assert ax.texts[0].get_text().startswith("not run yet")
        assert ax.get_title() == figures.PANELS[key]
    assert "kedro run --pipelines cifar2" in panels["cifar2_accuracy"].texts[0].get_text()


def test_panels_with_data_draw_it_and_the_others_say_not_run():
    eigen = make_table("eigen_index", [0, 1, 5], one_class=[0])
    cifar = make_table("num_train", [100, 300], experiment="cifar2")
    fig = figures.summary_plot(
        ntk_eigenvalues=np.logspace(2, -2, 20),
        eigen_results=eigen,
        alignment=make_alignment(),
        cifar2_results=cifar,
        nad_images=np.ones((8, 4, 4, 1)),
    )
    panels = _panels(fig)
    drawn = {"spectrum", "eigen_accuracy", "alignment", "cifar2_accuracy", "nad_images"}
    assert {k for k, ax in panels.items() if ax.axison} == drawn
    lines = {ln.get_gid(): ln for ln in panels["eigen_accuracy"].get_lines() if ln.get_gid()}
    np.testing.assert_allclose(
        lines["network:test"].get_ydata(), [accuracy("network", j, "test") for j in (1, 5)]
    )
    assert "network:one_class" in lines
    for key in drawn:
        ax = panels[key]
        finite = [
            ln for ln in ax.get_lines() if np.isfinite(np.asarray(ln.get_ydata(), float)).any()
        ]
        assert finite or ax.images, key
    assert figures.figure_has_data(fig)


def test_a_malformed_input_is_an_error_not_an_empty_panel():
    bad = make_table("eigen_index", [1, 5]).drop(columns="train_accuracy")
    with pytest.raises(ValueError, match="train_accuracy"):
        figures.summary_plot(eigen_results=bad)


def test_figures_save_through_the_catalogs_dataset_types(tmp_path):
    from kedro_datasets.matplotlib import MatplotlibDataset
    from kedro_datasets.plotly import JSONDataset

    table = make_table("eigen_index", [0, 1, 5], one_class=[0])
    for suffix in ("png", "pdf"):
        path = tmp_path / f"accuracy.{suffix}"
        MatplotlibDataset(filepath=str(path)).save(figures.eigen_accuracy_plot(table))
        assert path.read_bytes()[:4] in (b"\x89PNG", b"%PDF")
    dataset = JSONDataset(filepath=str(tmp_path / "accuracy.json"))
    dataset.save(figures.eigen_accuracy_plotly(table))
    loaded = dataset.load()
    assert isinstance(loaded, go.Figure)
    test = next(t for t in loaded.data if t.meta["kind"] == "network" and t.meta["what"] == "test")
    np.testing.assert_allclose(
        np.asarray(test.y, float), [accuracy("network", j, "test") for j in (1, 5)]
    )
