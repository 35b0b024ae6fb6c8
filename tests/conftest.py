"""Shared test setup: one XLA compilation cache for the run, and throw-away copies of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Most of the suite's time is XLA compilation of the same small programs (model inits,
# float64 references, and every `kedro run` subprocess). A persistent compilation cache
# shared by this process and its subprocesses compiles each program once per test run.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="linearized-kedro-jax-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Tiny settings for end-to-end runs (conf/test): real `kedro run`, seconds per pipeline.
TEST_PARAMETERS = """
data:
  subset_sizes:
    cifar10: [120, 60]
    mnist: [120, 60]
    fashion_mnist: [120, 60]
    digits: [200, 100]
ntk:
  num_eigvecs: 20
  progress: false
eigen_training:
  label_idx: [1, 5]
  progress: false
  train:
    epochs: 2
nads:
  input_shape: [8, 8, 1]
nad_training:
  label_idx: [0, 30]
  num_train: 200
  num_test: 100
  progress: false
  train:
    epochs: 2
pretrained_comparison:
  label_idx: 1
  progress: false
  train:
    epochs: 2
"""


def kedro_env() -> dict[str, str]:
    """Environment for subprocess ``kedro`` runs: no telemetry, no GPU probing noise."""
    env = dict(os.environ)
    env.update(
        DO_NOT_TRACK="1",
        KEDRO_DISABLE_TELEMETRY="1",
        MPLBACKEND="Agg",
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        # No MLflow run per test command where the [mlflow] extra is installed
        # (tests/test_tracking.py switches it back on for its own run).
        LINEARIZED_KEDRO_TRACKING="0",
    )
    return env


def copy_project(destination: Path, extra_parameters: str = "") -> Path:
    """Copies the project (conf, src, notebooks) into ``destination`` with a tiny ``conf/test``.

    The copy gets its own empty ``data/``.
    """
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy2(PROJECT_ROOT / name, destination / name)
    shutil.copytree(
        PROJECT_ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local")
    )
    (destination / "conf" / "local").mkdir(exist_ok=True)
    shutil.copytree(
        PROJECT_ROOT / "src",
        destination / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    if (PROJECT_ROOT / "notebooks").exists():
        shutil.copytree(PROJECT_ROOT / "notebooks", destination / "notebooks")
    (destination / "data" / "01_raw").mkdir(parents=True, exist_ok=True)
    test_env = destination / "conf" / "test"
    test_env.mkdir(exist_ok=True)
    (test_env / "parameters.yml").write_text(TEST_PARAMETERS + extra_parameters)
    return destination


def run_kedro(project: Path, *args: str, check: bool = True, timeout: float = 600):
    """Runs ``python -m kedro <args>`` in ``project``; returns the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kedro {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def kedro_run(
    project: Path,
    pipelines: str,
    params: str = "",
    *options: str,
    check: bool = True,
    timeout: float = 600,
):
    """``kedro run --env test --pipelines <pipelines> [--params <params>] <options>``.

    Args:
        project: a project copy (``copy_project``).
        pipelines: comma-separated pipeline names.
        params: the ``--params`` string; empty: none.
        *options: further ``kedro run`` options, e.g. ``"--load-versions", "x:v"``.
        check: raise when the run fails (otherwise return the failed process).
        timeout: seconds.
    """
    args = ["run", "--env", "test", "--pipelines", pipelines]
    if params:
        args += ["--params", params]
    return run_kedro(project, *args, *options, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def train_data():
    """The training engine's tiny problem (``fakes.training_data``)."""
    from fakes import training_data

    return training_data()


@pytest.fixture(scope="session")
def train_mlp():
    """(module, θ0) of the engine's tiny MLP (``fakes.training_mlp``)."""
    from fakes import training_mlp

    return training_mlp()


@pytest.fixture
def project_copy(tmp_path):
    """A fresh copy of the project (conf + tiny ``conf/test`` env) in a temporary folder."""
    return copy_project(tmp_path / "project")
