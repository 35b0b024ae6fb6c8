"""End to end: real ``kedro run`` on digits, the analysis notebook headless, Kedro-Viz build.

Runs in a temporary copy of the project (``conftest.copy_project``: pyproject.toml,
conf/, src/, notebooks/, .telemetry, an empty data/) with the shared tiny ``conf/test``
environment plus this task's settings. Budget: about 3 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_project, kedro_env, run_kedro

from linearized_kedro.pipelines.reporting.nodes import EXPERIMENTS as REPORTED

pytestmark = pytest.mark.slow

# Experiments in dependency order; reporting runs last, on its own (it has no inputs
# from the others in the graph, it reads their stored versions).
EXPERIMENTS = (
    "ntk_spectrum",
    "eigen_training",
    "pretrained_comparison",
    "nads_directions",
    "nad_training",
    "cifar2",
)
RUN_PARAMS = "data.dataset=digits,model=mlp"
NOTEBOOK_ENV = {"LINEARIZED_KEDRO_MODEL": "mlp", "LINEARIZED_KEDRO_DATASET": "digits"}
# Added to the shared tiny `conf/test` (tests/conftest.py) for the pipelines of this task.
EXTRA_PARAMETERS = """
cifar2:
  num_train: [100, -1]
  progress: false
  train:
    epochs: 1
    batch_size: 64
"""


def _run(project: Path, *args: str, timeout: float = 240):
    return run_kedro(project, *args, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("e2e") / "project", EXTRA_PARAMETERS)


@pytest.fixture(scope="module")
def registered(project) -> list[str]:
    code = (
        "import json; from pathlib import Path;"
        "from kedro.framework.startup import bootstrap_project;"
        "bootstrap_project(Path('.'));"
        "from kedro.framework.project import pipelines;"
        "print(json.dumps(sorted(pipelines)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ran(project, registered) -> list[str]:
    experiments = [name for name in EXPERIMENTS if name in registered]
    assert "cifar2" in experiments and "reporting" in registered
    # One session for all experiments; the registry prepends `data` where needed.
    pipelines = ",".join(experiments)
    _run(project, "run", "--env", "test", "--pipelines", pipelines, "--params", RUN_PARAMS)
    _run(project, "run", "--env", "test", "--pipelines", "reporting", "--params", RUN_PARAMS)
    return experiments


def _latest(path: Path) -> Path:
    versions = sorted(p for p in path.iterdir() if (p / path.name).exists())
    assert versions, f"no version saved under {path}"
    return versions[-1] / path.name


def test_pipelines_write_results_and_summary(project, ran):
    results = _latest(project / "data/07_model_output/cifar2/digits/mlp/results.csv")
    text = results.read_text()
    assert text.startswith("num_train,kind") or "num_train" in text.splitlines()[0]
    assert (
        _latest(project / "data/08_reporting/cifar2/digits/mlp/accuracy_vs_size.png").stat().st_size
        > 10_000
    )
    summary = _latest(project / "data/08_reporting/summary/digits/mlp/summary.md").read_text()
    assert "## CIFAR-2" in summary and "| 200 |" in summary  # -1 → all 200 prepared rows
    for name in ran:
        assert f"`{name}`" in summary
    not_run = [e.pipeline for e in REPORTED if e.pipeline not in ran]
    assert summary.count("**Not run yet.**") == len(not_run), summary
    html_text = _latest(project / "data/08_reporting/summary/digits/mlp/summary.html").read_text()
    assert "data:image/png;base64," in html_text


def test_notebook_runs_headless_and_every_figure_has_data(project, ran, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(project / "notebooks/analysis.ipynb", as_version=4)
    # Every figure the notebook shows goes through plt.show(): check it has data there,
    # and that no figure is left undisplayed at the end.
    # `%matplotlib inline` replaces plt.show, so re-wrap it before every cell.
    guard = nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as _plt\n"
        "from linearized_kedro.core.plots import figure_has_data as _has_data\n"
        "_SHOWN, _EMPTY = [], []\n"
        "def _title(fig):\n"
        "    return fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()\n"
        "def _wrap(*_):\n"
        "    show = _plt.show\n"
        "    if getattr(show, '_checked', False):\n"
        "        return\n"
        "    def checked(*args, **kwargs):\n"
        "        for num in _plt.get_fignums():\n"
        "            fig = _plt.figure(num)\n"
        "            (_SHOWN if _has_data(fig) else _EMPTY).append(_title(fig))\n"
        "        return show(*args, **kwargs)\n"
        "    checked._checked = True\n"
        "    _plt.show = checked\n"
        "get_ipython().events.register('pre_run_cell', _wrap)\n"
    )
    check = nbformat.v4.new_code_cell(
        "assert not _EMPTY, f'figures without data: {_EMPTY}'\n"
        "assert not _plt.get_fignums(), 'a figure was created but never shown'\n"
        "print('SHOWN', len(_SHOWN), _SHOWN)"
    )
    notebook.cells = [guard, *notebook.cells, check]
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    # The kernel inherits this process's environment.
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
    shown = next(line for line in text.splitlines() if line.startswith("SHOWN"))
    # cifar2 always ran; every other experiment that ran adds its figures.
    assert "CIFAR-2" in shown, text
    expected_titles = {
        "ntk_spectrum": "NTK spectrum",
        "eigen_training": "Eigenfunction benchmark",
        "pretrained_comparison": "θ_end",
        "nad_training": "Training on NADs",
    }
    for name, title in expected_titles.items():
        if name in ran:
            assert title in shown, (name, shown)
    for experiment in REPORTED:
        if experiment.pipeline not in ran:
            assert f"--pipelines {experiment.pipeline}" in text
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= 1 + sum(name in ran for name in expected_titles)


def test_kedro_viz_build_contains_every_pipeline(project, registered, ran):
    _run(project, "viz", "build", "--include-previews", timeout=180)
    api = project / "build" / "api"
    main = json.loads((api / "main").read_text())
    built = {p["id"] for p in main["pipelines"]}
    assert set(registered) <= built, set(registered) - built
    names = {node["name"] for node in main["nodes"]}
    for node in ("train_cifar2_size_sweep", "summarize_experiments"):
        assert node in names
    layers = {node.get("layer") for node in main["nodes"] if node.get("type") == "data"}
    assert {"model_output", "reporting"} <= layers
    for pipeline in registered:
        assert (api / "pipelines" / pipeline).exists()
    # ResultsCollectionDataset.preview(): one row per collected artifact.
    collection = next(n for n in main["nodes"] if n["name"] == "experiment_results")
    preview = json.loads((api / "nodes" / collection["id"]).read_text())["preview"]
    assert preview["columns"] == ["artifact", "status", "version", "filepath"]
    assert any(row[0] == "cifar2_results" for row in preview["data"])
