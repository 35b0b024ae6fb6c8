"""The NAD experiment API (docs/methods.md §3.3) on LeNet-GeLU with 8×8×1 inputs (D = 64)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from linearized_kedro.core.config import ConfigError, from_mapping
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.experiments.nads import (
    NadsConfig,
    NadsResult,
    compute_nads,
    nad_model_config,
)

SHAPE = (8, 8, 1)
D = 64
# The shared preset says ReLU: the NAD experiment must replace it with nads.activation.
LENET = {"name": "lenet", "activation": "relu", "conv_features": [3, 4], "dense_features": [16, 8]}
NADS = NadsConfig(input_shape=SHAPE, progress=False)
CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


@pytest.fixture(scope="module")
def result() -> NadsResult:
    return compute_nads(LENET, NADS, 42)


def test_outputs(result):
    assert result.nads.shape == (D, D) and result.nads.dtype == np.float32
    assert result.images.shape == (D, *SHAPE) and result.images.dtype == np.float32
    np.testing.assert_array_equal(result.images.reshape(D, D), result.nads)
    np.testing.assert_allclose(result.nads @ result.nads.T, np.eye(D), atol=1e-5)
    values = result.eigenvalues
    assert values.shape == (D,) and values.dtype == np.float64
    assert np.all(np.diff(values) <= 0) and values[0] > 0
    # LeNet's NADs are strongly anisotropic (docs/methods.md §2.3): the spectrum spans decades.
    assert values[0] / values[D // 2] > 100
    # θ0 is init(key(seed), zeros((1, H, W, C))) of the preset with the NAD activation.
    assert result.model_config.activation == "gelu"
    expected = init_variables(build_model(result.model_config), 42, SHAPE)
    jax.tree_util.tree_map(np.testing.assert_array_equal, result.init_variables, expected)
    report = result.report
    assert report["model_config"] == {**result.model_config.to_dict(), "activation": "gelu"}
    assert report["model_config"]["conv_features"] == [3, 4]
    assert report["settings"] == NADS.to_dict() and report["settings"]["input_shape"] == [8, 8, 1]
    assert report["seed"] == 42 and report["points"]["num_points"] == 1
    assert report["input_dim"] == D and report["num_params"] > D
    assert report["max_relative_residual"] < 1e-10
    assert set(report["timings"]) >= {"operator", "gram", "eigh"}
    assert report["num_zero_eigenvalues"] == int(np.sum(values <= 1e-12 * values[0]))


def test_deterministic_seeded_and_reusable(result):
    again = compute_nads(LENET, NADS, 42)
    np.testing.assert_array_equal(again.nads, result.nads)
    np.testing.assert_array_equal(again.eigenvalues, result.eigenvalues)
    # A stored θ0 gives the same NADs as initialising it again.
    stored = compute_nads(LENET, NADS, 42, variables0=result.init_variables)
    np.testing.assert_array_equal(stored.nads, result.nads)
    # Control: another seed is another θ0, hence other NADs.
    other = compute_nads(LENET, NADS, 7)
    assert np.abs(np.abs(np.sum(other.nads[:4] * result.nads[:4], axis=1)) - 1).max() > 1e-3


def test_base_parameters_build_the_config():
    # What Kedro does with `params:nads` before the run: cls(**mapping) from the YAML.
    mapping = yaml.safe_load((CONF / "parameters_nads.yml").read_text())["nads"]
    config = NadsConfig(**mapping)
    assert config.input_shape == (32, 32, 1) and config.activation == "gelu"
    assert from_mapping(NadsConfig, mapping) == config


def test_bad_settings_are_refused(result):
    with pytest.raises(ConfigError, match="nads.sigmaa"):
        from_mapping(NadsConfig, {"sigmaa": 1.0})
    with pytest.raises(ConfigError, match="nads.sigma must be >= 0"):
        NadsConfig(sigma=-1.0)
    with pytest.raises(ConfigError, match="nads.input_shape must be \\[H, W, C\\]"):
        NadsConfig(input_shape=(8, 8))
    with pytest.raises(ConfigError, match="nads.method must be one of"):
        NadsConfig(method="svds")
    with pytest.raises(ConfigError, match="nads.chunk_size"):
        NadsConfig(chunk_size=0)
    with pytest.raises(ValueError, match="identically zero.*nads.sigma > 0"):
        compute_nads(LENET, NADS.replace(activation="relu"), 42)
    with pytest.raises(ConfigError, match="restricted to inputs"):
        nad_model_config({**LENET, "input_shape": [32, 32, 1]}, NADS)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        compute_nads(LENET, NADS, "42")
    with pytest.raises(ValueError, match="do not match model"):
        compute_nads({**LENET, "dense_features": [16]}, NADS, 0, variables0=result.init_variables)
