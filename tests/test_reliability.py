"""Fault injection on real ``kedro run``s: no fault blocks the project, mixes runs or loses data.

One project copy (digits, MLP, tiny settings) and one :class:`kedro_zygote.Zygote`
that forks a real ``kedro run`` per command (imports paid once). The copy's
``settings.py`` also registers :class:`fault_injection.FaultInjectionHook`.

1. SIGKILL in the middle of writing each artifact of ``ntk_spectrum`` (data saves
   included), and right after its last save (saved, not yet committed); then the
   same for ``eigen_training`` (its own saves). After every kill the invariants
   below are checked, and the next run must reach its own fault point (a run that
   fails earlier counts as *blocked*).
2. The same with a full disk (``ENOSPC`` injected halfway through each write).
3. Two identical ``ntk_spectrum`` runs racing, one paused mid-Gram (SIGSTOP).
4. Eight concurrent partition jobs of ``eigen_training`` sharing ``data/``.
5. A flipped byte in a stored spectrum, and the recovery the error message names.

Invariants after every fault: every visible artifact verifies against its sidecar;
no complete version was lost or changed; within one run, a pipeline's artifacts are
all committed or none; each pipeline's latest complete artifacts come from one run;
clean reruns reproduce the reference numbers bit for bit. The counts are printed and
asserted (0 blocked, 0 mixed, 0 lost); docs/reliability.md reports them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_project, kedro_env
from kedro_zygote import Zygote

from linearized_kedro.datasets import runs as registry
from linearized_kedro.datasets.integrity import forget_verifications
from linearized_kedro.datasets.metadata import is_committed, read_sidecar
from linearized_kedro.datasets.retention import verify_all, versioned_artifacts, versions_of

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
PARAMS = "model=mlp,data.dataset=digits,label_idx=1,eigen_training.alignment=false"
FAULT, FAULT_LOG = "LINEARIZED_KEDRO_FAULT", "LINEARIZED_KEDRO_FAULT_LOG"


class Lab:
    """The project copy, its zygote and the fault ledger."""

    def __init__(self, project: Path):
        self.project = project
        self.data = project / "data"
        # Wide lines: rich does not wrap the messages the tests look for.
        self.zygote = Zygote(project, {**kedro_env(), "COLUMNS": "400"})
        self.counts = defaultdict(int)
        self.problems: list[str] = []
        self.saves: dict[str, list[str]] = {}
        self.reference: dict[str, object] = {}

    def kedro(self, *args, fault: str | None = None, log: Path | None = None):
        env = {FAULT: fault or "", FAULT_LOG: str(log) if log else ""}
        return self.zygote.run(*args, env=env)

    def run(self, pipeline: str, fault: str | None = None, params: str = PARAMS, *extra):
        return self.kedro(
            "run", "--env", "test", "--pipelines", pipeline, "--params", params, *extra, fault=fault
        )

    # -- state on disk --------------------------------------------------------

    def stored(self) -> dict[tuple[Path, str], tuple[bool, dict]]:
        """(artifact folder, version) → (committed, sidecar) for every stored version."""
        out = {}
        for artifact in versioned_artifacts(self.data):
            for version in versions_of(artifact):
                path = artifact / version / artifact.name
                if path.is_file():
                    committed = is_committed(_LOCAL, str(path))
                    out[(artifact, version)] = (committed, read_sidecar(str(path)))
        return out

    def check(self, before: dict, label: str, same_latest: bool = True) -> dict:
        """The invariants after a fault; returns the new state.

        ``same_latest=False`` where runs of part of a pipeline are expected (partition
        jobs write some of eigen_training's artifacts, the merge the others).
        """
        forget_verifications()
        _, findings = verify_all(self.data)
        for finding in findings:
            self.problems.append(f"{label}: visible artifact fails verification: {finding}")
        now = self.stored()
        for key, (committed, meta) in before.items():
            if committed and not (
                key in now
                and now[key][0]
                and now[key][1]["artifact"]["sha256"] == meta["artifact"]["sha256"]
            ):
                self.counts["lost"] += 1
                self.problems.append(f"{label}: complete version lost: {key}")
        units = defaultdict(set)
        latest: dict[tuple[str, Path], str] = {}
        for (artifact, version), (committed, meta) in now.items():
            units[(version, meta.get("pipeline"))].add(committed)
            if committed and version > latest.get((meta.get("pipeline"), artifact), ""):
                latest[(meta.get("pipeline"), artifact)] = version
        for unit, flags in units.items():
            if len(flags) > 1:
                self.counts["mixed"] += 1
                self.problems.append(f"{label}: run {unit} partly committed")
        per_pipeline = defaultdict(set)
        for (pipeline, _), version in latest.items():
            per_pipeline[pipeline].add(version)
        for pipeline, versions in per_pipeline.items():
            if same_latest and len(versions) > 1:
                self.counts["mixed"] += 1
                self.problems.append(f"{label}: latest complete {pipeline} mixes {versions}")
        return now

    def expect_fault(self, rc: int, log: str, fault: str, label: str) -> None:
        """A fault run must fail *at its fault* (else the project was blocked by leftovers)."""
        self.counts["faults injected"] += 1
        if fault.startswith("kill") and rc == -signal.SIGKILL:
            self.counts["runs recovered"] += 1  # it ran up to its own fault point
            return
        if fault.startswith("enospc") and rc == 1 and "Out of disk space" in log:
            self.counts["runs recovered"] += 1
            return
        self.counts["blocked"] += 1
        self.problems.append(f"{label}: rc={rc}, not the injected fault:\n{log[-3000:]}")

    def expect_success(self, rc: int, log: str, label: str) -> None:
        if rc != 0:
            self.counts["blocked"] += 1
            self.problems.append(f"{label}: clean run failed rc={rc}:\n{log[-3000:]}")
        else:
            self.counts["runs recovered"] += 1

    def artifact(self, pipeline: str, suffix: str) -> Path:
        """The versioned artifact of ``pipeline`` whose file name ends with ``suffix``.

        Found through the sidecars (``pipeline``), whatever the catalog names the file.
        """
        found = []
        for artifact in versioned_artifacts(self.data):
            if not artifact.name.endswith(suffix):
                continue
            stored = [artifact / v / artifact.name for v in versions_of(artifact)]
            meta = read_sidecar(str(next(p for p in stored if p.is_file())))
            if meta.get("pipeline") == pipeline:
                found.append(artifact)
        assert len(found) == 1, (pipeline, suffix, found)
        return found[0]

    def latest(self, pipeline: str, suffix: str) -> Path:
        """The file of the latest complete version of that artifact."""
        artifact = self.artifact(pipeline, suffix)
        versions = [
            v
            for v in versions_of(artifact)
            if is_committed(_LOCAL, str(artifact / v / artifact.name))
        ]
        return artifact / versions[0] / artifact.name

    def last_run(self) -> dict:
        runs = registry.list_runs(self.data / ".runs")
        return runs[0]


_LOCAL = __import__("fsspec").filesystem("file")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("reliability") / "project")
    settings = project / "src" / "linearized_kedro" / "settings.py"
    settings.write_text(
        settings.read_text()
        + f"\n# Test harness only (tests/test_reliability.py).\nimport sys as _sys\n"
        f"_sys.path.insert(0, {str(TESTS)!r})\n"
        "from fault_injection import FaultInjectionHook  # noqa: E402\n\n"
        "HOOKS = (*HOOKS, FaultInjectionHook())\n"
    )
    lab = Lab(project)
    started = time.perf_counter()
    for pipeline in ("ntk_spectrum", "eigen_training"):
        log = project / f"saves-{pipeline}.log"
        rc, out = lab.kedro(
            "run", "--env", "test", "--pipelines", pipeline, "--params", PARAMS,
            fault="count", log=log,
        )  # fmt: skip
        assert rc == 0, out[-4000:]
        lab.saves[pipeline] = [line.split("\t")[1] for line in log.read_text().splitlines()]
    lab.reference["eigenvalues"] = np.load(lab.latest("ntk_spectrum", "eigenvalues.npy"))
    lab.reference["results"] = pd.read_csv(lab.latest("eigen_training", "results.csv"))
    lab.reference["ntk_run"] = lab.latest("ntk_spectrum", "eigenvalues.npy").parent.name
    lab.seconds = {"reference": time.perf_counter() - started}
    yield lab
    lab.zygote.close()


def _kill_sweep(lab: Lab, pipeline: str, skip: set[str]) -> None:
    state = lab.check({}, "start")
    names = lab.saves[pipeline]
    points = [f"kill-mid:{i}" for i, name in enumerate(names, 1) if name not in skip]
    points.append(f"kill-after:{len(names)}")  # saved, not yet committed
    for fault in points:
        rc, log = lab.run(pipeline, fault)
        label = f"{pipeline} {fault} ({names[int(fault.split(':')[1]) - 1]})"
        lab.expect_fault(rc, log, fault, label)
        assert lab.last_run()["status"] == "killed", label
        state = lab.check(state, label)


def test_sigkill_at_every_save_of_ntk_spectrum_then_downstream_reads_a_complete_run(lab):
    started = time.perf_counter()
    _kill_sweep(lab, "ntk_spectrum", skip=set())
    # Killed spectra left newer eigenvalues/eigenvectors/reports on disk; downstream
    # must read one complete spectrum run, the reference's.
    rc, log = lab.run("eigen_training")
    lab.expect_success(rc, log, "eigen_training after the ntk kills")
    manifest = lab.last_run()
    assert set(manifest["input_versions"].values()) == {lab.reference["ntk_run"]}
    results = pd.read_csv(lab.latest("eigen_training", "results.csv"))
    pd.testing.assert_frame_equal(results, lab.reference["results"])
    lab.seconds["sigkill ntk_spectrum"] = time.perf_counter() - started
    assert lab.problems == []


def test_sigkill_at_every_save_of_eigen_training(lab):
    started = time.perf_counter()
    data_saves = set(lab.saves["ntk_spectrum"]) & set(lab.saves["eigen_training"])
    _kill_sweep(lab, "eigen_training", skip=data_saves)  # data saves: killed above
    lab.seconds["sigkill eigen_training"] = time.perf_counter() - started
    assert lab.problems == []


def test_full_disk_at_every_save(lab):
    started = time.perf_counter()
    state = lab.check({}, "start")
    for pipeline in ("ntk_spectrum", "eigen_training"):
        skip = set(lab.saves["ntk_spectrum"]) if pipeline == "eigen_training" else set()
        skip &= set(lab.saves[pipeline])
        for i, name in enumerate(lab.saves[pipeline], 1):
            if name in skip:
                continue
            rc, log = lab.run(pipeline, f"enospc:{i}")
            label = f"{pipeline} enospc:{i} ({name})"
            lab.expect_fault(rc, log, "enospc", label)
            assert lab.last_run()["status"] == "failed", label
            state = lab.check(state, label)
    # Clean reruns after every kind of fault reproduce the reference bit for bit.
    for pipeline in ("ntk_spectrum", "eigen_training"):
        rc, log = lab.run(pipeline)
        lab.expect_success(rc, log, f"clean {pipeline} after the faults")
    np.testing.assert_array_equal(
        np.load(lab.latest("ntk_spectrum", "eigenvalues.npy")), lab.reference["eigenvalues"]
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(lab.latest("eigen_training", "results.csv")), lab.reference["results"]
    )
    lab.check(state, "clean reruns")
    lab.seconds["enospc"] = time.perf_counter() - started
    assert lab.problems == []


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_identical_runs_racing_with_one_paused_share_tiles_safely(lab):
    started = time.perf_counter()
    # 3 row blocks: 6 tiles, each written as it finishes (resume_after_s=0).
    params = f"{PARAMS},ntk.block_size=100,ntk.resume_after_s=0"
    env = {FAULT: "pause-tile:2", FAULT_LOG: ""}
    args = ("run", "--env", "test", "--pipelines", "ntk_spectrum", "--params", params)
    paused, _ = lab.zygote.start(*args, env=env)
    deadline = time.time() + 120
    while not _stopped(paused):
        assert time.time() < deadline, "the paused run never reached its second tile"
        time.sleep(0.2)
    lab.counts["faults injected"] += 1
    tiles = sorted(lab.data.rglob("tile_*.npy"))
    assert len(tiles) == 2
    folder = tiles[0].parent
    rc, log = lab.kedro(*args)
    lab.expect_success(rc, log, "the run racing a paused one")
    assert folder.is_dir(), "the finished run deleted tiles a paused run still uses"
    os.kill(paused, signal.SIGCONT)
    rc = lab.zygote.wait(paused)
    lab.expect_success(rc, "", "the paused run, resumed")
    assert not folder.exists(), "the last run to finish releases the tiles"
    runs = registry.list_runs(lab.data / ".runs")[:2]
    assert {r["status"] for r in runs} == {"complete"} and runs[0]["run_id"] != runs[1]["run_id"]
    values = [np.load(a / r["run_id"] / a.name) for r in runs for a in _eigenvalue_folders(lab)]
    np.testing.assert_array_equal(values[0], values[1])
    lab.seconds["race"] = time.perf_counter() - started
    assert lab.problems == []


def _eigenvalue_folders(lab):
    return [lab.artifact("ntk_spectrum", "eigenvalues.npy")]


def test_eight_concurrent_partition_jobs_share_data(lab):
    started = time.perf_counter()
    conf = lab.project / "conf" / "test" / "parameters.yml"
    conf.write_text(
        conf.read_text().replace("label_idx: [1, 5]\n", "label_idx: [1, 2, 3, 4, 5, 6, 7, 8]\n", 1)
    )
    params = "model=mlp,data.dataset=digits,eigen_training.alignment=false"
    rc, log = lab.run("eigen_training", None, params)
    lab.expect_success(rc, log, "one-process sweep of 8 indices")
    one_process = pd.read_csv(lab.latest("eigen_training", "results.csv"))
    before = {r["run_id"] for r in registry.list_runs(lab.data / ".runs")}
    jobs = [
        lab.zygote.start(
            *("run", "--env", "test", "--pipelines", "eigen_training"),
            *("--tags", "eigen_training_sweep", "--params"),
            f"{params},eigen_training.partition={p},eigen_training.num_partitions=8",
        )
        for p in range(8)
    ]
    for pid, log in jobs:
        lab.expect_success(lab.zygote.wait(pid), log.read_text(), f"partition job {pid}")
    runs = [r for r in registry.list_runs(lab.data / ".runs") if r["run_id"] not in before]
    assert len(runs) == 8 and {r["status"] for r in runs} == {"complete"}
    rc, log = lab.kedro(
        *("run", "--env", "test", "--pipelines", "eigen_training", "--tags"),
        *("eigen_training_merge", "--params", f"{params},eigen_training.num_partitions=8"),
    )
    lab.expect_success(rc, log, "merge of 8 partitions")
    merged = pd.read_csv(lab.latest("eigen_training", "results.csv"))
    pd.testing.assert_frame_equal(merged, one_process, check_exact=False, rtol=1e-6)
    lab.check({}, "8 concurrent jobs", same_latest=False)
    lab.seconds["8 concurrent jobs"] = time.perf_counter() - started
    assert lab.problems == []


def test_a_flipped_byte_is_refused_and_the_named_recovery_works(lab):
    started = time.perf_counter()
    rc, log = lab.run("eigen_training")
    assert rc == 0, log[-3000:]  # negative control: intact, it runs
    stored = lab.latest("ntk_spectrum", "eigenvalues.npy")
    payload = bytearray(stored.read_bytes())
    payload[-1] ^= 0x01
    stored.write_bytes(bytes(payload))
    lab.counts["faults injected"] += 1
    rc, log = lab.run("eigen_training")
    flat = " ".join(log.split())
    assert rc == 1 and "is corrupted" in flat and stored.name in flat
    assert "delete the version folder" in flat
    rc, log = lab.kedro("verify")
    assert rc == 1 and stored.parent.name in " ".join(log.split())
    # The recovery the message names: delete that version, rerun.
    import shutil

    shutil.rmtree(stored.parent)
    rc, log = lab.run("eigen_training")
    lab.expect_success(rc, log, "eigen_training after removing the corrupted version")
    assert lab.last_run()["input_versions"]
    lab.seconds["flipped byte"] = time.perf_counter() - started
    assert lab.problems == []


def test_a_missing_load_versions_pin_lists_the_versions_that_exist(lab):
    stored = lab.latest("ntk_spectrum", "eigenvalues.npy")
    name = read_sidecar(str(stored))["dataset_name"]  # whatever the catalog calls it
    missing = "1999-01-01T00.00.00.000Z"
    rc, log = lab.run("eigen_training", None, PARAMS, "--load-versions", f"{name}:{missing}")
    flat = " ".join(log.split())
    assert rc == 1 and f"{name}:{missing}: no such version" in flat
    assert f"{stored.parent.name} (complete)" in flat and "(incomplete)" in flat
    assert not list(lab.data.rglob(f"{lab.last_run()['run_id']}/*.npy"))  # nothing written


def test_repeated_runs_store_prepared_data_and_theta0_once(lab):
    """Dozens of runs above; identical prepared data and θ0 are one file each (hard links)."""

    def stored(artifact):
        files = [artifact / v / artifact.name for v in versions_of(artifact)]
        return [f for f in files if f.is_file()]

    for pipeline, suffix in [("data", "inputs.npy"), ("ntk_spectrum", "init_params.msgpack")]:
        files = stored(lab.artifact(pipeline, suffix))
        assert len(files) > 10
        assert len({f.stat().st_ino for f in files}) == 1, suffix
    # Negative control: the reports (timings differ per run) are separate files.
    reports = stored(lab.artifact("ntk_spectrum", "report.json"))
    assert len({f.stat().st_ino for f in reports}) == len(reports) > 5


def test_fault_ledger(lab):
    """The counts docs/reliability.md reports: 0 blocked, 0 mixed, 0 lost."""
    summary = {
        "faults injected": lab.counts["faults injected"],
        "runs recovered": lab.counts["runs recovered"],
        "blocked projects": lab.counts["blocked"],
        "mixed runs": lab.counts["mixed"],
        "artifacts lost": lab.counts["lost"],
        "saves": {k: len(v) for k, v in lab.saves.items()},
        "seconds": {k: round(v, 1) for k, v in lab.seconds.items()},
    }
    print("\nfault ledger:", json.dumps(summary))
    assert lab.problems == []
    ntk = len(lab.saves["ntk_spectrum"])
    eig = len(set(lab.saves["eigen_training"]) - set(lab.saves["ntk_spectrum"]))
    kills, full_disks = (ntk + 1) + (eig + 1), ntk + eig
    assert summary["faults injected"] == kills + full_disks + 2  # + the race and the flip
    assert summary["blocked projects"] == summary["mixed runs"] == summary["artifacts lost"] == 0
