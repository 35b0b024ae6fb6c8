"""Real ``kedro run`` of the pipelines in a temporary copy of the project.

Tiny settings (``conf/test``, see ``conftest.TEST_PARAMETERS``) on real digits and on
generated files in the official formats. These are the commands a researcher types.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_project, kedro_run, run_kedro
from official_formats import raw_images_catalog, write_cifar10_binary

pytestmark = pytest.mark.slow

DIGITS = "model=mlp,data.dataset=digits"


def _latest(project, relative):
    """The latest version of a versioned artifact."""
    folder = project / relative
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    assert versions, f"no versions in {folder}"
    return versions[-1] / folder.name


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory):
    """A project copy where ntk_spectrum has run once for MLP on digits."""
    project = copy_project(tmp_path_factory.mktemp("digits") / "project")
    kedro_run(project, "ntk_spectrum", DIGITS)
    return project


def test_ntk_spectrum_artifacts(digits_project):
    base = "data/05_model_input/digits/mlp"
    values = np.load(_latest(digits_project, f"{base}/ntk_eigenvalues.npy"))
    vectors = np.load(_latest(digits_project, f"{base}/ntk_eigenvectors.npy"))
    report = json.loads(_latest(digits_project, f"{base}/ntk_report.json").read_text())
    assert values.shape == (20,) and vectors.shape == (20, 300)
    assert np.all(np.diff(values) <= 0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert report["n"] == 300 and report["num_train"] == 200
    assert report["max_residual"] < 1e-6
    assert report["model_config"]["name"] == "mlp"
    sidecar = json.loads(
        (
            _latest(digits_project, f"{base}/ntk_eigenvectors.npy").parent
            / "ntk_eigenvectors.npy.meta.json"
        ).read_text()
    )
    assert sidecar["dataset"] == "digits" and sidecar["seed"] == 42
    assert sidecar["model_config"]["name"] == "mlp" and "jax" in sidecar["library_versions"]
    assert (_latest(digits_project, "data/08_reporting/digits/mlp/ntk_spectrum.png")).exists()
    # The Gram tiles of a finished run are released.
    tiles = digits_project / "data/04_feature/ntk_gram_tiles/digits/mlp"
    assert not tiles.exists() or not any(tiles.iterdir())


def test_same_seed_same_artifacts(digits_project):
    # The first run left its compiled programs (θ0's init among them) in the persistent
    # compilation cache; the second run loads them and must give the same arrays.
    # (The suite shares one cache through JAX_COMPILATION_CACHE_DIR, which wins over the
    # project's data/09_compilation_cache: tests/conftest.py.)
    cache = Path(
        os.environ.get("JAX_COMPILATION_CACHE_DIR", digits_project / "data/09_compilation_cache")
    )
    assert any(cache.glob("jit_init-*")), sorted(p.name for p in cache.glob("*"))
    # The deprecated singular --pipeline keeps working.
    run_kedro(
        digits_project, "run", "--env", "test", "--pipeline", "ntk_spectrum", "--params", DIGITS
    )
    folder = digits_project / "data/05_model_input/digits/mlp/ntk_eigenvectors.npy"
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(versions) >= 2  # nothing was overwritten
    first = np.load(versions[0] / "ntk_eigenvectors.npy")
    last = np.load(versions[-1] / "ntk_eigenvectors.npy")
    np.testing.assert_array_equal(first, last)


def test_single_task_shortcut_params(digits_project):
    kedro_run(digits_project, "eigen_training", f"{DIGITS},label_idx=3,linearize=true")
    import pandas as pd

    table = pd.read_csv(
        _latest(digits_project, "data/07_model_output/digits/mlp/eigen_training_results.csv")
    )
    assert list(table["task_value"]) == [3] and list(table["kind"]) == ["linear"]


def test_missing_upstream_names_the_pipeline(digits_project):
    proc = kedro_run(
        digits_project, "eigen_training", "model=lenet,data.dataset=digits", check=False
    )
    assert proc.returncode != 0
    assert "kedro run --pipelines ntk_spectrum" in proc.stdout + proc.stderr


def test_label_idx_beyond_k_is_a_clear_error(digits_project):
    proc = kedro_run(digits_project, "eigen_training", f"{DIGITS},label_idx=50", check=False)
    assert proc.returncode != 0
    assert "out of range" in proc.stdout + proc.stderr


def test_cifar10_without_files_fails_fast_naming_the_file(project_copy):
    start = time.perf_counter()
    proc = kedro_run(project_copy, "data", "data.dataset=cifar10,data.download=never", check=False)
    assert proc.returncode != 0
    assert "cifar-10-binary.tar.gz" in proc.stdout + proc.stderr
    assert time.perf_counter() - start < 60


def test_ntk_spectrum_on_generated_cifar10_files(project_copy):
    raw = project_copy / "data/01_raw/cifar10"
    checksums = write_cifar10_binary(raw, 150, 70, seed=3)
    (project_copy / "conf/test/catalog.yml").write_text(raw_images_catalog(checksums))
    kedro_run(project_copy, "ntk_spectrum", "model=lenet")
    values = np.load(_latest(project_copy, "data/05_model_input/cifar10/lenet/ntk_eigenvalues.npy"))
    assert values.shape == (20,) and np.all(values > 0)
