"""benchmarks/gpu_check.py in its dry-run mode: every stage runs on this CPU in seconds.

The dry run forces the device path on tiny models, so the script that will run once on a
lent GPU is exercised end to end here: a broken stage would otherwise only show up on the
GPU, where time is scarce.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ~15 s on a quiet 2-core CPU: the dry run compiles LeNet and ResNet18 on both paths, which
# is its point (the script must not first fail on the GPU).
@pytest.mark.slow
def test_dry_run_runs_every_stage(gpu_check, tmp_path):
    out = tmp_path / "check.json"
    results = gpu_check.main(["--dry-run", "--out", str(out)])
    stages = results["stages"]
    assert set(stages) == {"environment", "equality", "lenet", "resnet18"}
    assert not [name for name, s in stages.items() if "error" in s], stages
    assert json.loads(out.read_text())["stages"].keys() == stages.keys()  # written as it goes
    for name in ("lenet", "resnet18"):
        eq = stages["equality"][name]
        assert eq["ok"], eq
        assert eq["path"]["products"] == eq["path"]["eigensolver"] == "device"
        assert eq["gram_max_rel_diff"] < 1e-12 and eq["eigenvalue_max_rel_diff"] < 1e-10
    assert stages["equality"]["resnet18"]["dropped_params"] > 0
    for name in ("lenet", "resnet18"):
        timed = stages[name]
        assert timed["path"]["products"] == "device" and timed["seconds_end_to_end"] > 0
        assert timed["max_residual"] < 1e-5
    assert stages["resnet18"]["zero_columns"]["dropped_fraction"] > 0.5
    assert stages["environment"]["precision_rule"]["choice"] in ("float64", "float32")


def test_a_failing_stage_is_recorded_and_the_others_still_run(gpu_check, tmp_path, monkeypatch):
    # Negative control: the equality check reports a mismatch instead of hiding it.
    def broken(spec):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(gpu_check, "equality", broken)
    results = gpu_check.main(
        ["--dry-run", "--only", "environment", "equality", "--out", str(tmp_path / "c.json")]
    )
    assert "simulated failure" in results["stages"]["equality"]["error"]
    assert "error" not in results["stages"]["environment"]
