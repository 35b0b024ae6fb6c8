"""The runtime hook's JAX settings: the persistent compilation cache (hooks/runtime.py)."""

from __future__ import annotations

import os

import jax
import pytest

from linearized_kedro.hooks.runtime import configure_jax

_ENV = (
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_ENABLE_X64",
    "JAX_DEFAULT_MATMUL_PRECISION",
)
_CONFIG = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_enable_x64",
    "jax_default_matmul_precision",
)


@pytest.fixture
def restored(monkeypatch):
    """Puts JAX's global settings and the environment back after the test."""
    for var in _ENV:
        monkeypatch.delenv(var, raising=False)  # the original values come back afterwards
    before = {name: getattr(jax.config, name) for name in _CONFIG}
    yield
    for name, value in before.items():
        jax.config.update(name, value)


def test_cache_folder_is_resolved_against_the_project(tmp_path, restored):
    runtime = {
        "compilation_cache_dir": "data/09_compilation_cache",
        "compilation_cache_min_compile_seconds": 0.5,
        "log_devices": False,
    }
    applied = configure_jax(runtime, project_path=tmp_path)
    folder = str(tmp_path / "data/09_compilation_cache")
    assert applied["compilation_cache_dir"] == folder
    assert jax.config.jax_compilation_cache_dir == folder
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
    # ParallelRunner's spawned workers read the same settings from the environment.
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == folder
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0.5"
    # An absolute folder is kept as it is.
    os.environ.pop("JAX_COMPILATION_CACHE_DIR")
    applied = configure_jax({**runtime, "compilation_cache_dir": str(tmp_path / "abs")})
    assert applied["compilation_cache_dir"] == str(tmp_path / "abs")
    # A folder set in the environment wins over the parameter.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "shared")
    applied = configure_jax(runtime, project_path=tmp_path)
    assert applied["compilation_cache_dir"] == str(tmp_path / "shared")


def test_bad_cache_settings_fail_early(restored):
    with pytest.raises(ValueError, match="compilation_cache_min_compile_seconds"):
        configure_jax(
            {
                "compilation_cache_dir": "cache",
                "compilation_cache_min_compile_seconds": -1,
                "log_devices": False,
            }
        )
