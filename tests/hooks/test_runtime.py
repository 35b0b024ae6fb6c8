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


class _Context:
    def __init__(self, runtime):
        self.config_loader = {"parameters": {"runtime": runtime}}


class _Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self):
        self.me = self


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_hook_freezes_for_the_run_and_releases_after(enabled):
    import gc
    import weakref

    from linearized_kedro.hooks.runtime import CollectorHook

    gc.unfreeze()
    hook = CollectorHook()
    obj = _Cycle()
    alive = weakref.ref(obj)
    try:
        hook.after_context_created(_Context({"freeze_gc": enabled}))
        hook.before_pipeline_run({}, None, None)
        assert (gc.get_freeze_count() > 0) is enabled
        del obj
        gc.collect()
        # Frozen: the cycle alive when the run started is not collected during the run.
        # Negative control (runtime.freeze_gc=false): it is.
        assert (alive() is not None) is enabled
        hook.after_pipeline_run({}, None, None, None)
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None  # collected once the run is over
    finally:
        gc.unfreeze()


def test_collector_hook_unfreezes_after_a_failed_run():
    import gc

    from linearized_kedro.hooks.runtime import CollectorHook

    hook = CollectorHook()
    try:
        hook.after_context_created(_Context({}))  # default: on
        assert gc.get_freeze_count() > 0
        hook.on_pipeline_error(RuntimeError("x"), {}, None, None)
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
