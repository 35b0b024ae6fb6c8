"""ProvenanceHook: every sidecar names its run, node, pipeline, inputs and settings.

In-process on the toy pipelines; the ``--runner ParallelRunner`` case (worker
processes that never saw ``before_pipeline_run``) runs a real ``kedro run``.
"""

from __future__ import annotations

import json

import pytest
from conftest import copy_project, kedro_run
from hook_harness import DOWN, UP, project_hooks, run

from linearized_kedro.datasets.metadata import read_sidecar
from linearized_kedro.hooks import RunsHook
from linearized_kedro.hooks.provenance import provenance_record

S1, S2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def test_sidecars_record_run_node_pipeline_inputs_and_settings(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=2.5)
    run(tmp_path, DOWN, hooks=project_hooks(tmp_path), session_id=S2)
    made = read_sidecar(str(tmp_path / "a.npy" / S1 / "a.npy"))
    assert made["run_id"] == S1 and made["session_id"] == S1
    assert made["node"] == "make_a" and made["pipeline"] == "up" and made["dataset_name"] == "a"
    assert made["params"] == {"value": 2.5} and made["inputs"] == {}
    assert made["seed"] == 42 and made["model"] == "mlp" and made["dataset"] == "toy"
    assert made["env"] == "test" and "jax" in made["library_versions"]
    used = read_sidecar(str(tmp_path / "c.npy" / S2 / "c.npy"))
    assert used["node"] == "use_b" and used["pipeline"] == "down"
    assert used["inputs"] == {"b": S1}  # lineage: which run of `up` it was computed from
    assert used["artifact"]["sha256"] and used["artifact"]["shape"] == [2, 3]


def test_without_the_hook_a_sidecar_has_no_run_settings_negative_control(tmp_path):
    runs_only = (RunsHook(registry_dir=str(tmp_path / ".runs"), pipelines={"up": UP}),)
    run(tmp_path, UP, hooks=runs_only, session_id=S1)
    meta = read_sidecar(str(tmp_path / "a.npy" / S1 / "a.npy"))
    assert meta["run_id"] == S1  # bound by the run hook...
    assert "node" not in meta and "seed" not in meta  # ...but nobody handed it provenance


def test_record_outside_a_run_plan_still_names_the_node(tmp_path):
    from kedro.io import DataCatalog, MemoryDataset

    catalog = DataCatalog(datasets={"params:value": MemoryDataset(3)})
    record = provenance_record(None, UP.nodes[0], catalog, "a")
    assert record["node"] == "make_a" and record["params"] == {"value": 3}
    assert record["pipeline"] is None and "run_id" not in record


@pytest.mark.slow
def test_parallel_runner_sidecars_carry_the_runs_settings(tmp_path):
    """~15 s: a real `kedro run --runner ParallelRunner` of the data pipeline (spawned workers)."""
    project = copy_project(tmp_path / "project")
    kedro_run(project, "data", "model=mlp,data.dataset=digits,seed=7", "--runner", "ParallelRunner")
    sidecars = [
        p for p in sorted((project / "data").rglob("*.meta.json")) if ".runs" not in p.parts
    ]
    assert len(sidecars) == 4  # the data pipeline's four artifacts
    run_ids = set()
    for path in sidecars:
        meta = json.loads(path.read_text())
        assert meta["dataset"] == "digits" and meta["seed"] == 7 and meta["model"] == "mlp"
        assert meta["node"] and meta["pipeline"] == "data" and meta["session_id"]
        assert meta["run_id"] == meta["artifact"]["version"]
        run_ids.add(meta["run_id"])
    assert len(run_ids) == 1
    (run_id,) = run_ids
    manifest = json.loads((project / "data" / ".runs" / run_id / "run.json").read_text())
    assert manifest["status"] == "complete"
    assert all(p.with_name(p.name.replace(".meta.json", ".commit.json")).exists() for p in sidecars)
