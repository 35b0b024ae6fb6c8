"""End to end: every pipeline through real ``kedro run``s on digits, then what is built on it.

One project copy (``conftest.copy_project``) runs the six experiments and the summary once,
with the first wave's tiny settings (``tests/golden/first_wave_parameters.yml``); the tests
then check:

- the artifacts equal the values the first-wave code produced for the same parameters
  (``tests/golden``): the redesign changed the Kedro layer, not the numbers;
- the summary, and that ``reporting`` honours ``--load-versions`` pins;
- the analysis notebook runs headless through the catalog;
- the Kedro-Viz build has every pipeline, layers in every pipeline, and reporting connected
  to the experiments it reads.

Budget: about 2 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, copy_project, kedro_run, run_kedro

from linearized_kedro.pipelines.reporting.nodes import EXPERIMENTS as REPORTED

pytestmark = pytest.mark.slow

GOLDEN = PROJECT_ROOT / "tests" / "golden"
EXPERIMENTS = (
    "ntk_spectrum",
    "eigen_training",
    "pretrained_comparison",
    "nads",
    "nad_training",
    "cifar2",
)
RUN_PARAMS = "data.dataset=digits,model=mlp"
NOTEBOOK_ENV = {"LINEARIZED_KEDRO_MODEL": "mlp", "LINEARIZED_KEDRO_DATASET": "digits"}


def versions(path: Path) -> list[Path]:
    """The saved versions of a versioned artifact, oldest first."""
    found = sorted(p for p in path.iterdir() if (p / path.name).exists())
    assert found, f"no version saved under {path}"
    return found


def latest(path: Path) -> Path:
    return versions(path)[-1] / path.name


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    (project / "conf/test/parameters.yml").write_text(
        (GOLDEN / "first_wave_parameters.yml").read_text()
    )
    kedro_run(project, ",".join(EXPERIMENTS), RUN_PARAMS, timeout=300)
    kedro_run(project, "reporting", RUN_PARAMS, timeout=300)
    return project


def test_artifacts_equal_the_first_wave(project):
    golden = np.load(GOLDEN / "first_wave_arrays.npz")
    tables = json.loads((GOLDEN / "first_wave_tables.json").read_text())
    data = project / "data"
    arrays = {
        "ntk_eigenvalues": data / "05_model_input/digits/mlp/ntk_eigenvalues.npy",
        "ntk_eigenvectors": data / "05_model_input/digits/mlp/ntk_eigenvectors.npy",
        "nad_eigenvalues": data / "05_model_input/nad/mlp/nads_eigenvalues.npy",
        "nads": data / "05_model_input/nad/mlp/nads_directions.npy",
        "sample_index": data / "03_primary/digits/prepared_sample_index.npy",
    }
    for name, path in arrays.items():
        np.testing.assert_allclose(
            np.load(latest(path)), golden[name], rtol=1e-6, atol=1e-7, err_msg=name
        )
    inputs = np.load(latest(data / "03_primary/digits/prepared_inputs.npy"))
    np.testing.assert_array_equal(inputs[:20], golden["prepared_inputs_head"])
    # Result tables: the first wave's columns were renamed into one schema (label_idx /
    # num_train → task_value, pretrained `model` → kind); the numbers must not change.
    for name, (task, kind, folder) in {
        "eigen_training": ("label_idx", "kind", "digits/mlp"),
        "pretrained_comparison": ("label_idx", "model", "digits/mlp"),
        "nad_training": ("label_idx", "kind", "nad/mlp"),
        "cifar2": ("num_train", "kind", "digits/mlp"),
    }.items():
        new = pd.read_csv(latest(data / f"07_model_output/{folder}/{name}_results.csv"))
        old = pd.DataFrame(tables[name]).rename(columns={task: "task_value", kind: "kind"})
        key = ["task_value", "kind"]
        merged = old.merge(new, on=key, suffixes=("_old", ""), validate="one_to_one")
        assert len(merged) == len(old) == len(new), name
        for metric in (
            "train_accuracy",
            "test_accuracy",
            "train_loss",
            "test_loss",
            "param_distance",
        ):
            np.testing.assert_allclose(
                merged[metric], merged[f"{metric}_old"], rtol=1e-5, err_msg=f"{name}.{metric}"
            )


def test_summary_covers_every_experiment(project):
    report = project / "data/08_reporting/digits/mlp"
    summary = latest(report / "summary.md").read_text()
    assert "## CIFAR-2" in summary and "| 200 |" in summary  # -1 → all 200 prepared rows
    for experiment in REPORTED:
        assert f"`{experiment.pipeline}`" in summary
    assert "**Not run yet.**" not in summary
    assert "data:image/png;base64," in latest(report / "summary.html").read_text()
    assert latest(report / "cifar2_accuracy.png").stat().st_size > 10_000
    figure = json.loads(latest(report / "ntk_spectrum.json").read_text())
    assert figure["data"], "the Plotly spectrum has no traces"


def test_reporting_honours_load_versions(project):
    folder = project / "data/05_model_input/digits/mlp"
    older = versions(folder / "ntk_eigenvalues.npy")[-1].name
    # A newer spectrum with another k (10 instead of 20).
    kedro_run(project, "ntk_spectrum", f"{RUN_PARAMS},ntk.num_eigvecs=10", timeout=300)
    summary_folder = project / "data/08_reporting/digits/mlp/summary.md"
    kedro_run(project, "reporting", RUN_PARAMS, timeout=300)
    assert "k (eigenpairs): 10" in latest(summary_folder).read_text()
    pins = f"ntk_eigenvalues:{older},ntk_report:{older}"
    kedro_run(project, "reporting", RUN_PARAMS, "--load-versions", pins, timeout=300)
    pinned = latest(summary_folder).read_text()
    assert "k (eigenpairs): 20" in pinned and f"`ntk_eigenvalues` {older}" in pinned
    # A pin to a version that does not exist is refused, listing the versions that do.
    missing = "ntk_eigenvalues:1999-01-01T00.00.00.000Z"
    proc = kedro_run(
        project, "reporting", RUN_PARAMS, "--load-versions", missing, check=False, timeout=300
    )
    assert proc.returncode != 0
    assert older in proc.stdout + proc.stderr and "no such version" in proc.stdout + proc.stderr


def test_notebook_runs_headless_through_the_catalog(project, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(project / "notebooks/analysis.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    for key, value in {**NOTEBOOK_ENV, "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(key, value)
    client.execute()
    outputs = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    ]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, errors
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "not found" not in text, text  # every experiment ran
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    # spectrum, accuracy, alignment, comparison, NAD spectrum, NAD images, NAD accuracy, CIFAR-2
    assert len(images) == 8, len(images)
    tables = [out for out in outputs if "text/html" in out.get("data", {})]
    assert any("test_accuracy" in out["data"]["text/html"] for out in tables)


def _graph(api: Path, pipeline: str) -> dict:
    return json.loads((api / "pipelines" / pipeline).read_text())


def test_kedro_viz_build_has_layers_and_lineage(project):
    run_kedro(project, "viz", "build", "--include-previews", timeout=300)
    api = project / "build" / "api"
    main = json.loads((api / "main").read_text())
    registered = {p["id"] for p in main["pipelines"]}
    assert {*EXPERIMENTS, "data", "reporting", "__default__"} <= registered
    for pipeline in registered:
        graph = _graph(api, pipeline)
        assert graph["layers"], f"no layers in {pipeline}"
        data_nodes = [n for n in graph["nodes"] if n["type"] == "data"]
        assert all(
            n.get("layer")
            for n in data_nodes
            if not n["name"].startswith("params:") and n["name"] != "artifact_versions"
        ), pipeline
    graph = _graph(api, "__default__")
    # The layers read in the data-engineering order, with no cycle (θ0 and the spectrum are
    # model inputs; trained parameters come before what is measured on them).
    assert graph["layers"] == [
        "raw",
        "primary",
        "model_input",
        "models",
        "model_output",
        "reporting",
    ]
    by_id = {n["id"]: n for n in graph["nodes"]}
    summarize = next(n["id"] for n in graph["nodes"] if n["name"].endswith("summarize_experiments"))
    feeding = {by_id[e["source"]]["name"] for e in graph["edges"] if e["target"] == summarize}
    for name in (
        "ntk_eigenvalues",
        "eigen_training_results",
        "pretrained_comparison_results",
        "nads_eigenvalues",
        "nad_training_results",
        "cifar2_results",
    ):
        assert name in feeding, (name, feeding)
