"""A sweep split over job-array partitions and merged equals the one-process sweep.

Two ``kedro run --tags eigen_training_sweep`` processes (partitions 0 and 1 of 2) run at
the same time in one project copy, a third merges them with ``--tags
eigen_training_merge``; the merged table must equal the table of a plain run. The
merge's refusals are checked in-process in ``tests/experiments/test_eigen_tasks.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import copy_project, kedro_env, kedro_run

PARAMS = "model=mlp,data.dataset=digits"


def _latest_table(project) -> pd.DataFrame:
    folder = project / "data/07_model_output/digits/mlp/eigen_training_results.csv"
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    return pd.read_csv(versions[-1] / folder.name)


@pytest.mark.slow
def test_two_process_partitioned_sweep_equals_one_process(tmp_path):
    project = copy_project(tmp_path / "project")
    # Three indices so the partitions are uneven: [1, 10] and [5]. Lists cannot be
    # passed with --params, so the test environment's file is edited.
    conf = project / "conf/test/parameters.yml"
    text = conf.read_text()
    assert "eigen_training:\n  label_idx: [1, 5]\n" in text
    conf.write_text(
        text.replace(
            "eigen_training:\n  label_idx: [1, 5]\n", "eigen_training:\n  label_idx: [1, 5, 10]\n"
        )
    )
    sweep = f"{PARAMS},eigen_training.alignment=false"
    # The reference: spectrum and the whole sweep in one process.
    kedro_run(project, "ntk_spectrum,eigen_training", sweep)
    one_process = _latest_table(project)
    assert sorted(one_process["task_value"].unique()) == [1, 5, 10]
    # Two partition jobs at the same time, in the same project; they read the spectrum
    # and prepared data of the first run (the tag leaves the data nodes out).
    procs = {
        p: subprocess.Popen(
            [sys.executable, "-m", "kedro", "run", "--env", "test"]
            + ["--pipelines", "eigen_training", "--tags", "eigen_training_sweep", "--params"]
            + [f"{sweep},eigen_training.partition={p},eigen_training.num_partitions=2"],
            cwd=project,
            env=kedro_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (0, 1)
    }
    for p, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"partition {p}: {err[-4000:]}"
    parts = project / "data/07_model_output/digits/mlp/eigen_training_partitions"
    names = sorted(p.name for p in parts.iterdir() if p.suffix == ".csv")  # not the sidecars
    assert names == ["part-000-of-001.csv", "part-000-of-002.csv", "part-001-of-002.csv"]
    assert sorted(pd.read_csv(parts / "part-000-of-002.csv")["task_value"].unique()) == [1, 10]

    merge = f"{sweep},eigen_training.num_partitions=2"
    kedro_run(project, "eigen_training", merge, "--tags", "eigen_training_merge")
    merged = _latest_table(project)
    pd.testing.assert_frame_equal(merged, one_process, check_exact=False, rtol=1e-6)


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_gpu_env_is_the_paper_scale_with_gpu_knobs():
    from pathlib import Path

    import yaml
    from kedro.config import OmegaConfigLoader

    from linearized_kedro.settings import CONFIG_LOADER_ARGS

    conf = Path(__file__).resolve().parents[1] / "conf"
    loader = OmegaConfigLoader(
        str(conf), env="gpu", runtime_params={"model": "resnet18"}, **CONFIG_LOADER_ARGS
    )
    params = loader["parameters"]
    paper = _flatten(yaml.safe_load((conf / "paper/parameters.yml").read_text()))
    gpu = _flatten(params)
    # Kedro runs one env: every paper setting must be repeated unchanged, except the
    # memory budget, which conf/gpu sizes for one 80 GB GPU.
    drift = {k: (v, gpu.get(k)) for k, v in paper.items() if k != "ntk.memory_budget_gb"}
    assert {k: pair for k, pair in drift.items() if pair[0] != pair[1]} == {}
    assert params["runtime"]["matmul_precision"] == "highest"
    assert params["ntk"]["accumulate_dtype"] == "float64"
    assert params["model_config"]["name"] == "resnet18"
    assert params["eigen_training"]["partition"] is None  # base keys survive
    assert loader["catalog"]["eigen_training_partitions"]["path"].endswith(
        "/eigen_training_partitions"
    )
