"""Run registry: unique run ids however many runs start in the same millisecond; liveness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kedro.io.core import generate_timestamp

from linearized_kedro.datasets import runs as registry

STAMP = "2026-11-30T01.12.04.999Z"


def test_next_version_is_one_millisecond_later_in_kedro_format():
    assert registry.next_version(STAMP) == "2026-11-30T01.12.05.000Z"
    assert registry.next_version("2026-12-31T23.59.59.999Z") == "2027-01-01T00.00.00.000Z"
    assert len(registry.next_version(generate_timestamp())) == len(generate_timestamp())
    assert registry.next_version("custom") == "custom-n1"
    assert registry.next_version("custom-n1") == "custom-n2"


def test_runs_started_in_the_same_millisecond_get_distinct_ids(tmp_path):
    with ThreadPoolExecutor(16) as pool:
        claimed = list(pool.map(lambda _: registry.claim_run_id(tmp_path, STAMP), range(32)))
    assert len(set(claimed)) == 32 and STAMP in claimed
    assert sorted(claimed) == sorted(p.name for p in tmp_path.iterdir())
    # Kedro sorts versions as strings: the claimed ids stay in time order.
    assert sorted(claimed)[0] == STAMP and sorted(claimed)[-1] > STAMP


def test_a_killed_run_is_recognised_as_not_running(tmp_path):
    run_dir = tmp_path / registry.claim_run_id(tmp_path, STAMP)
    registry.write_manifest(run_dir, {"status": "running"})
    src = str(Path(registry.__file__).resolve().parents[2])
    script = textwrap.dedent(
        f"""
        import time
        from linearized_kedro.datasets.runs import RunLock
        lock = RunLock({str(run_dir)!r})
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert registry.run_is_live(run_dir) and registry.run_status(run_dir) == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not registry.run_is_live(run_dir)
        assert registry.run_status(run_dir) == "killed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_finished_runs_report_their_status(tmp_path):
    done = tmp_path / registry.claim_run_id(tmp_path, STAMP)
    lock = registry.RunLock(done)
    registry.write_manifest(done, {"status": "running", "pipeline_names": ["data"]})
    assert registry.run_status(done) == "running"
    registry.update_manifest(done, status="complete")
    lock.release()
    runs = registry.list_runs(tmp_path)
    assert [(r["run_id"], r["status"], r["pipeline_names"]) for r in runs] == [
        (STAMP, "complete", ["data"])
    ]
