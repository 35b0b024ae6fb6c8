"""RunsHook: unique run ids, commit per pipeline, one upstream run per pipeline, pins checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hook_harness import DOWN, UP, Crash, project_hooks, run, versions

from linearized_kedro.datasets import runs as registry
from linearized_kedro.datasets.metadata import is_committed
from linearized_kedro.hooks.runs import MissingVersionError, MixedRunsError

S1, S2, S3 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"


def _committed(root, name, version):
    path = root / f"{name}.npy" / version / f"{name}.npy"
    return is_committed(__import__("fsspec").filesystem("file"), str(path))


def test_a_pipelines_outputs_are_committed_together(tmp_path):
    run(tmp_path, UP + DOWN, hooks=project_hooks(tmp_path), session_id=S1)
    assert all(_committed(tmp_path, name, S1) for name in ("a", "b", "c"))
    commits = sorted(p.name for p in (tmp_path / ".runs" / S1 / "commits").iterdir())
    assert commits == ["down.json", "up.json"]
    assert registry.read_manifest(tmp_path / ".runs" / S1)["status"] == "complete"


def test_a_failed_run_is_never_mixed_with_a_finished_one(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)
    with pytest.raises(Crash):
        run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S2, value=5.0, fail=True)
    assert versions(tmp_path, "a") == [S1, S2] and versions(tmp_path, "b") == [S1]
    assert not _committed(tmp_path, "a", S2)
    assert registry.run_status(tmp_path / ".runs" / S2) == "failed"
    _, catalog = run(tmp_path, DOWN, hooks=project_hooks(tmp_path), session_id=S3)
    np.testing.assert_array_equal(catalog.load("c"), [[1.0] * 3, [2.0] * 3])


def test_without_the_hook_a_failed_run_is_mixed_in_negative_control(tmp_path):
    run(tmp_path, UP, session_id=S1, value=1.0)
    with pytest.raises(Crash):
        run(tmp_path, UP, session_id=S2, value=5.0, fail=True)
    _, catalog = run(tmp_path, DOWN, session_id=S3)
    # a from the failed run (5), b from the earlier one (2 = 2·1): the first wave's bug.
    np.testing.assert_array_equal(catalog.load("c"), [[5.0] * 3, [2.0] * 3])


def test_inputs_from_one_pipeline_without_a_common_run_are_refused_naming_both(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S2, value=3.0)
    # Leave only a@S2 and b@S1 complete (e.g. the other versions were garbage-collected).
    for name, version in (("a", S1), ("b", S2)):
        (tmp_path / f"{name}.npy" / version / f"{name}.npy.commit.json").unlink()
    with pytest.raises(MixedRunsError) as info:
        run(tmp_path, DOWN, hooks=project_hooks(tmp_path), session_id=S3)
    message = str(info.value)
    assert f"a → {S2}" in message and f"b → {S1}" in message
    assert "kedro run --pipelines up" in message and f"--load-versions a:{S2},b:{S1}" in message
    assert not (tmp_path / "c.npy").exists()  # refused before the first node ran
    # An explicit pin of both is the user's choice and is allowed.
    _, catalog = run(
        tmp_path,
        DOWN,
        hooks=project_hooks(tmp_path),
        load_versions={"a": S2, "b": S1},
    )
    np.testing.assert_array_equal(catalog.load("c"), [[3.0] * 3, [2.0] * 3])


def test_the_newest_run_complete_for_all_inputs_is_read(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)
    # A later partial rerun of `up` that produced only `a` (e.g. --nodes make_a).
    run(tmp_path, UP.only_nodes("make_a"), hooks=project_hooks(tmp_path), session_id=S2, value=9)
    assert _committed(tmp_path, "a", S2)
    _, catalog = run(tmp_path, DOWN, hooks=project_hooks(tmp_path))
    np.testing.assert_array_equal(catalog.load("c"), [[1.0] * 3, [2.0] * 3])


def test_pinning_one_input_pins_its_siblings(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S2, value=4.0)
    _, catalog = run(tmp_path, DOWN, hooks=project_hooks(tmp_path), load_versions={"a": S1})
    np.testing.assert_array_equal(catalog.load("c"), [[1.0] * 3, [2.0] * 3])


def test_a_pin_that_does_not_exist_lists_the_versions_that_do(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1)
    with pytest.raises(Crash):
        run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S2, fail=True)
    missing = "1999-01-01T00.00.00.000Z"
    with pytest.raises(MissingVersionError) as info:
        run(tmp_path, DOWN, hooks=project_hooks(tmp_path), load_versions={"a": missing})
    message = str(info.value)
    assert f"a:{missing}: no such version" in message
    assert f"{S2} (incomplete), {S1} (complete)" in message


def test_inputs_are_resolved_once_for_the_whole_run(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)

    def another_process_commits_a_newer_run():
        run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S2, value=7.0)

    _, catalog = run(
        tmp_path, DOWN, hooks=project_hooks(tmp_path), on_load=another_process_commits_a_newer_run
    )
    assert _committed(tmp_path, "b", S2)  # the newer run did commit meanwhile
    np.testing.assert_array_equal(catalog.load("c"), [[1.0] * 3, [2.0] * 3])


def test_runs_with_the_same_session_id_get_distinct_versions(tmp_path):
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=1.0)
    run(tmp_path, UP, hooks=project_hooks(tmp_path), session_id=S1, value=2.0)
    second = registry.next_version(S1)
    assert versions(tmp_path, "a") == [S1, second]
    assert json.loads((tmp_path / ".runs" / second / "run.json").read_text())["session_id"] == S1
    # Negative control: without the hook the second run collides with the first.
    from kedro.io.core import DatasetError

    run(tmp_path / "plain", UP, session_id=S1)
    with pytest.raises(DatasetError, match="must not exist"):
        run(tmp_path / "plain", UP, session_id=S1)


def test_project_hooks_run_in_order_validation_runs_upstream_provenance():
    from kedro.framework.hooks.manager import _create_hook_manager

    from linearized_kedro.settings import HOOKS

    manager = _create_hook_manager()
    for hook in HOOKS:
        manager.register(hook)
    impls = manager.hook.before_pipeline_run.get_hookimpls()
    called = [type(i.plugin).__name__ for i in reversed(impls) if not i.wrapper]
    order = ["ParameterValidationHook", "RunsHook", "UpstreamArtifactsHook", "ProvenanceHook"]
    assert [name for name in called if name in order] == order
