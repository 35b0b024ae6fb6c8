"""Experiment tracking (``hooks/tracking.py``): what is logged, and a tracked run read back.

The first tests check the pure parts (flattened typed parameters, results-table metrics, the
reproducing command) without MLflow. The last runs a tiny ``ntk_spectrum`` +
``eigen_training`` with tracking on, then reads the SQLite store: the parameters are the
flattened typed blocks of this run, the metrics equal the saved results table and spectrum,
the figures and the git commit are there; with ``LINEARIZED_KEDRO_TRACKING=0`` (negative
control) the same command leaves no run in the store. It needs the optional extra
(``pip install -e ".[mlflow]"``) and is skipped without it. Budget: about 40 s.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import copy_project, kedro_env

from linearized_kedro.command import run_command
from linearized_kedro.core.config import Config
from linearized_kedro.experiments.data import DataConfig
from linearized_kedro.experiments.results import METRICS
from linearized_kedro.hooks.tracking import (
    SWITCH,
    flat_parameters,
    report_metrics,
    results_metrics,
    tracking_enabled,
)


@dataclasses.dataclass(frozen=True)
class _Inner(Config):
    SECTION = "toy.train"
    epochs: int = 3
    schedule: tuple[float, ...] = (0.1, 0.01)


@dataclasses.dataclass(frozen=True)
class _Toy(Config):
    SECTION = "toy"
    name: str = "lenet"
    train: _Inner = _Inner()


def test_parameters_are_flattened_typed_blocks_not_reprs():
    flat = flat_parameters({"toy": _Toy(), "seed": 42, "data": DataConfig(dataset="digits")})
    assert flat["toy.name"] == "lenet" and flat["toy.train.epochs"] == "3"
    assert flat["toy.train.schedule"] == "[0.1, 0.01]" and flat["seed"] == "42"
    assert flat["data.dataset"] == "digits"
    assert not any("(" in value for value in flat.values()), flat
    # Negative control: what kedro-mlflow's own hook logs for a typed block, str(value), is
    # one repr (which `flat_parameters` never produces).
    assert str(_Toy()).startswith("_Toy(") and "_Toy(" not in "".join(flat.values())


def test_results_metrics_follow_the_results_schema():
    table = pd.DataFrame(
        {
            "experiment": ["eigen_training"] * 3,
            "kind": ["network", "linear", "network"],
            "task_value": [1, 1, 5],
            **{m: [0.1, 0.2, math.nan] for m in METRICS},
            "diverged": [False, False, True],
        }
    )
    metrics = {(key, step): value for key, value, step in results_metrics(table, METRICS)}
    assert metrics[("eigen_training/network_1/test_accuracy", 0)] == 0.1
    assert metrics[("eigen_training/linear_1/test_accuracy", 0)] == 0.2
    # Along the task axis, for MLflow's charts: step = the eigen-index.
    assert metrics[("eigen_training/network/test_accuracy", 1)] == 0.1
    assert math.isnan(metrics[("eigen_training/network/test_accuracy", 5)])
    assert metrics[("eigen_training/network_5/diverged", 0)] == 1.0
    assert len(metrics) == 3 * (2 * len(METRICS) + 1)


def test_report_metrics_keep_results_not_settings():
    report = {
        "k": 20,
        "max_residual": 1e-14,
        "solver": "dense",
        "x64": False,
        "residuals": [1e-14],
        "plan": {"block_size": 300},
        "timings": {"gram_seconds": 0.5},
    }
    metrics = {key: value for key, value, _ in report_metrics("ntk_report", report)}
    assert metrics == {
        "ntk_report/k": 20.0,
        "ntk_report/max_residual": 1e-14,
        "ntk_report/timings/gram_seconds": 0.5,
    }


def test_run_command_reproduces_the_run_settings():
    run_params = {
        "pipeline_names": ["eigen_training"],
        "env": "paper",
        "runtime_params": {"label_idx": 10, "data": {"dataset": "digits"}},
        "load_versions": {"ntk_eigenvectors": "2026-11-28T10.00.00.000Z"},
        "runner": "<kedro.runner.parallel_runner.ParallelRunner object at 0x7f>",
        "to_nodes": None,
    }
    parameters = {"model": "lenet", "data": {"dataset": "digits", "num_train": None}}
    assert run_command(run_params, parameters) == (
        "kedro run --pipelines=eigen_training "
        "--load-versions=ntk_eigenvectors:2026-11-28T10.00.00.000Z --runner=ParallelRunner "
        "--params model=lenet,data.dataset=digits,label_idx=10 --env paper"
    )
    # The default pipeline, environment and runner are not written; the selection is, even
    # when it came from a default.
    assert run_command({"pipeline_names": ["__default__"], "env": "local"}, parameters) == (
        "kedro run --params model=lenet,data.dataset=digits"
    )
    # Kedro hands hooks the pipelines in set order (it varies between processes): written
    # sorted, so one run always gets one command; the order given is not kept.
    for given in (["ntk_spectrum", "eigen_training"], ["eigen_training", "ntk_spectrum"]):
        command = run_command({"pipeline_names": given}, parameters)
        assert command.startswith("kedro run --pipelines=eigen_training,ntk_spectrum ")


def test_tracking_switch(monkeypatch):
    monkeypatch.setenv(SWITCH, "0")
    assert not tracking_enabled()
    monkeypatch.setenv(SWITCH, "1")
    try:
        import kedro_mlflow  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    assert tracking_enabled() == installed


def _kedro(project, *args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        env={**kedro_env(), SWITCH: "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def _latest(path):
    return sorted(p / path.name for p in path.iterdir() if (p / path.name).exists())[-1]


@pytest.mark.slow
def test_tracked_run_reads_back_from_the_store(tmp_path):
    pytest.importorskip(
        "kedro_mlflow", reason='the tracking extra is not installed: pip install -e ".[mlflow]"'
    )
    import mlflow

    project = copy_project(tmp_path / "project")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "src", "conf"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "tracked"], cwd=project, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.strip()
    selection = "model=mlp,data.dataset=digits"
    args = ["run", "--env", "test", "--pipelines", "ntk_spectrum,eigen_training"]
    _kedro(project, *args, "--params", f"{selection},label_idx=1")

    client = mlflow.MlflowClient(f"sqlite:///{project}/data/09_tracking/mlflow.db")
    experiment = client.get_experiment_by_name("linearized-kedro")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "eigen_training+ntk_spectrum digits/mlp"  # sorted
    params = run.data.params
    assert params["ntk.num_eigvecs"] == "20"  # conf/test, through the typed block
    assert params["eigen_training.train.epochs"] == "2" and params["data.dataset"] == "digits"
    assert not any(v.startswith(("NtkParams(", "EigenTasksConfig(")) for v in params.values())

    results = pd.read_csv(
        _latest(project / "data/07_model_output/digits/mlp/eigen_training_results.csv")
    )
    for row in results.to_dict("records"):
        key = f"eigen_training/{row['kind']}_{row['task_value']}/test_accuracy"
        assert run.data.metrics[key] == pytest.approx(row["test_accuracy"], rel=1e-12)
    eigenvalues = np.load(_latest(project / "data/05_model_input/digits/mlp/ntk_eigenvalues.npy"))
    history = client.get_metric_history(run.info.run_id, "ntk_eigenvalues")
    np.testing.assert_allclose(
        [m.value for m in sorted(history, key=lambda m: m.step)], eigenvalues
    )
    assert run.data.metrics["ntk_report/k"] == 20

    tags = run.data.tags
    assert tags["git_commit"] == commit and tags["mlflow.source.git.commit"] == commit
    assert tags["kedro_command"] == (
        "kedro run --pipelines=eigen_training,ntk_spectrum "
        f"--params {selection},label_idx=1 --env test"
    )
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/ntk_spectrum_plot.png" in figures
    png = client.download_artifacts(run.info.run_id, "figures/ntk_spectrum_plot.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Negative control: the same kind of run with tracking switched off adds no run.
    _kedro(project, *args[:4], "ntk_spectrum", "--params", selection, env={SWITCH: "0"})
    assert len(client.search_runs([experiment.experiment_id])) == 1
