"""``kedro gc`` / ``kedro verify``: bounded storage that never touches what must stay."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from click.testing import CliRunner
from kedro.io.core import Version

from linearized_kedro.cli import cli
from linearized_kedro.datasets import GramBlockStoreDataset, NumpyDataset
from linearized_kedro.datasets import runs as registry
from linearized_kedro.datasets.retention import apply_gc, plan_gc, verify_all

V = [f"2026-01-0{d}T00.00.00.000Z" for d in range(1, 9)]
DAY = 86400.0


def _save(root, name, version, value, commit=True):
    dataset = NumpyDataset(filepath=str(root / name), version=Version(None, None))
    dataset.bind_run(version)
    dataset.save(np.full(4, float(value)))
    if commit:
        dataset.commit(version, {"run_id": version})


def _age(path, days):
    """Makes everything under ``path`` look ``days`` old."""
    stamp = time.time() - days * DAY
    for folder, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(folder, name), (stamp, stamp))
        os.utime(folder, (stamp, stamp))


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        _save(root, "x.npy", V[i], i)  # four complete runs
    _save(root, "x.npy", V[4], 9, commit=False)  # killed run
    _age(root, 3)
    _save(root, "x.npy", V[5], 8, commit=False)  # a run that may still be writing
    return root


def _removed(removals):
    return sorted(item.path.name for item in removals)


def test_retention_keeps_the_newest_complete_and_recent_incomplete(data):
    removals = plan_gc(data, keep_last=2)
    assert _removed(removals) == [V[0], V[1], V[4]]
    reasons = {item.path.name: item.reason for item in removals}
    assert "incomplete" in reasons[V[4]] and "complete, older" in reasons[V[0]]


def test_the_latest_complete_version_is_never_removed(data):
    assert V[3] not in _removed(plan_gc(data, keep_last=1, grace_s=0))
    assert _removed(plan_gc(data, keep_last=1, grace_s=0)) == [V[0], V[1], V[2], V[4], V[5]]


def test_pinned_runs_and_their_lineage_are_kept(data):
    _save(data, "y.npy", V[6], 1)  # an upstream artifact, newer run
    _save(data, "y.npy", V[0], 0)  # ...and the run x@V[1] was computed from
    run_dir = data / ".runs" / V[1]
    run_dir.mkdir(parents=True)
    registry.write_manifest(run_dir, {"status": "complete", "input_versions": {"y": V[0]}})
    (data / ".pins").write_text(f"# keep the figure of the paper\nx:{V[1]}\n")
    removals = _removed(plan_gc(data, keep_last=1, grace_s=0))
    assert V[1] not in removals  # pinned in data/.pins
    plan = plan_gc(data, keep_last=1, grace_s=0)
    assert [i.path for i in plan if i.path.parent.name == "y.npy"] == []  # lineage of x@V[1]
    assert V[2] in removals  # negative control: an unpinned old version goes
    assert V[2] not in _removed(plan_gc(data, keep_last=1, grace_s=0, keep=[V[2]]))


def test_a_running_run_is_never_touched(data):
    run_dir = data / ".runs" / registry.claim_run_id(data / ".runs", V[5])
    lock = registry.RunLock(run_dir)
    try:
        assert V[5] not in _removed(plan_gc(data, keep_last=1, grace_s=0))
    finally:
        lock.release()
    assert V[5] in _removed(plan_gc(data, keep_last=1, grace_s=0))


def test_apply_removes_and_what_remains_still_loads(data):
    removals = plan_gc(data, keep_last=2)
    freed = apply_gc(removals)
    assert freed == sum(item.size for item in removals) > 0
    assert sorted(p.name for p in (data / "x.npy").iterdir()) == [V[2], V[3], V[5]]
    latest = NumpyDataset(filepath=str(data / "x.npy"), version=Version(None, None)).load()
    np.testing.assert_array_equal(latest, np.full(4, 3.0))
    assert plan_gc(data, keep_last=2) == []


def test_orphaned_tiles_go_live_and_recent_ones_stay(tmp_path):
    root = tmp_path / "data"
    tiles = root / "04_feature" / "tiles"
    killed = GramBlockStoreDataset(str(tiles))
    killed.bind_run("run-killed")
    store = killed.load()("orphan", {})
    store.put((0, 0), np.eye(2))
    store.lease_path.write_text('{"host": "gone-host", "pid": 1}')  # lease of a dead run
    _age(tiles / "orphan", 30)
    live = GramBlockStoreDataset(str(tiles))
    live.bind_run("run-live")
    live.load()("inuse", {}).put((0, 0), np.eye(2))
    _age(tiles / "inuse", 30)
    recent = GramBlockStoreDataset(str(tiles))
    recent.bind_run("run-recent")
    recent_store = recent.load()("recent", {})
    recent_store.put((0, 0), np.eye(2))
    recent_store.lease_path.unlink()
    removals = plan_gc(root)
    assert [(i.path.name, i.reason) for i in removals] == [
        ("orphan", "Gram tiles no live run uses")
    ]
    apply_gc(removals)
    assert sorted(p.name for p in tiles.iterdir() if p.is_dir()) == ["inuse", "recent"]


def test_verify_finds_a_flipped_byte(data):
    checked, findings = verify_all(data)
    assert checked == 6 and findings == []
    stored = data / "x.npy" / V[2] / "x.npy"
    payload = bytearray(stored.read_bytes())
    payload[-3] ^= 0x10
    stored.write_bytes(bytes(payload))
    checked, findings = verify_all(data)
    assert [f.path for f in findings] == [stored] and "corrupted" in findings[0].problem


def test_cli_gc_lists_then_applies_and_verify_fails_on_corruption(data):
    runner = CliRunner()
    dry = runner.invoke(cli, ["gc", "--data", str(data), "--keep-last", "2"])
    assert dry.exit_code == 0, dry.output
    assert "would remove" in dry.output and "rerun with --apply" in dry.output
    assert len(list((data / "x.npy").iterdir())) == 6  # a dry run removes nothing
    done = runner.invoke(cli, ["gc", "--data", str(data), "--keep-last", "2", "--apply"])
    assert done.exit_code == 0 and "Removed 3 item(s)" in done.output
    good = runner.invoke(cli, ["verify", "--data", str(data)])
    assert good.exit_code == 0 and "0 problem(s)" in good.output
    stored = data / "x.npy" / V[3] / "x.npy"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    bad = runner.invoke(cli, ["verify", "--data", str(data)])
    assert bad.exit_code == 1 and str(stored) in bad.output
    missing = runner.invoke(cli, ["gc", "--data", str(data / "nope")])
    assert missing.exit_code != 0 and "No data folder" in missing.output
