"""experiments.spectrum: the whole NTK spectrum computation against float64 references.

Reference: ``tests/reference.py`` (explicit float64 Gram, dense ``numpy.linalg.eigh``).
Eigenvalues from float32 features accumulated in float64 agree to ~1e-6 relative; vectors
are stored as float32.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
import pytest
from reference import explicit_gram

from linearized_kedro.core.config import ConfigError
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.datasets.gram_blocks import GramBlockStoreFactory
from linearized_kedro.experiments.spectrum import Spectrum, SpectrumConfig, compute_spectrum

MLP = {"name": "mlp", "activation": "relu", "features": [16, 8]}
LENET = {"name": "lenet", "activation": "tanh", "conv_features": [2, 3], "dense_features": [6]}
RESNET = {"name": "resnet18", "stage_sizes": [1, 1], "num_filters": 4}
REPORT_KEYS = {
    # the first wave's report
    "n", "k", "num_train", "num_test", "dataset", "input_shape", "num_params",
    "init_params_fingerprint", "model_config", "seed", "solver", "solver_info", "plan",
    "settings", "precision", "approximation", "gram_fingerprint", "sign_convention",
    "residuals", "max_residual", "eigenvalues", "positive_fraction", "timings",
    # new
    "path", "zero_columns", "distributed", "blas_threads",
}  # fmt: skip


def _case(config, shape, n, seed=0):
    module = build_model(config)
    variables = jax.tree_util.tree_map(np.asarray, init_variables(module, 42, shape))
    x = np.asarray(jax.random.normal(jax.random.key(seed), (n, *shape)), np.float32)
    return module, variables, x


def _reference(module, variables, x, k):
    w, V = np.linalg.eigh(explicit_gram(module, variables, x))
    return w[::-1][:k], V[:, ::-1][:, :k].T


def _config(**overrides):
    return SpectrumConfig(**{"num_eigvecs": 5, "progress": False, "resume": False, **overrides})


def test_spectrum_matches_float64_reference():
    module, variables, x = _case(MLP, (6, 6, 1), 40)
    out = compute_spectrum(x, variables, MLP, _config(), seed=0, num_train=30, dataset="toy")
    ref_values, ref_vectors = _reference(module, variables, x, 5)
    np.testing.assert_allclose(out.values, ref_values, rtol=1e-5)
    overlap = np.abs(np.sum(out.vectors * ref_vectors, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
    rows = np.arange(5)
    assert np.all(out.vectors[rows, np.argmax(np.abs(out.vectors), axis=1)] > 0)
    assert out.values.dtype == np.float64 and out.vectors.dtype == np.float32
    report = out.report
    assert REPORT_KEYS <= set(report), REPORT_KEYS - set(report)
    assert report["n"] == 40 and report["num_train"] == 30 and report["num_test"] == 10
    assert report["path"]["products"] == "host" and report["path"]["eigensolver"] == "host"
    assert report["max_residual"] < 1e-5 and report["settings"]["num_eigvecs"] == 5
    assert report["plan"]["n"] == 40 and report["plan"]["method"] == "structured"
    # Negative control: the inputs in another order are another kernel's first rows.
    other = compute_spectrum(x[::-1], variables, MLP, _config(), seed=0, num_train=30)
    assert np.abs(np.sum(other.vectors * ref_vectors, axis=1)).min() < 0.99


@pytest.mark.parametrize(("config", "shape", "n"), [(MLP, (6, 6, 1), 40), (LENET, (8, 8, 1), 30)])
def test_device_path_equals_host_path(config, shape, n):
    module, variables, x = _case(config, shape, n)
    host = compute_spectrum(
        x, variables, config, _config(host_precision="float64"), seed=0, num_train=n
    )
    dev = compute_spectrum(
        x,
        variables,
        config,
        _config(device="device", device_precision="float64"),
        seed=0,
        num_train=n,
    )
    path = dev.report["path"]
    assert (path["products"], path["gram"], path["eigensolver"]) == ("device",) * 3
    assert path["product_precision"] == "float64" and path["backend"] == "cpu"
    assert "device" in dev.report["solver_info"]
    np.testing.assert_allclose(dev.values, host.values, rtol=1e-11)
    np.testing.assert_allclose(dev.vectors, host.vectors, atol=1e-6)  # float32 storage


@pytest.mark.parametrize(("config", "shape", "n"), [(MLP, (6, 6, 1), 40), (LENET, (8, 8, 1), 30)])
def test_float32_host_products_meet_the_accuracy_targets(config, shape, n):
    # The default host products (float32 GEMMs over ≤ 1024-column chunks added in
    # float64) against the float64 explicit-Jacobian reference: the targets are 1e-5
    # relative for the top eigenvalues and 0.9999 for the subspace cosines.
    module, variables, x = _case(config, shape, n)
    out = compute_spectrum(x, variables, config, _config(), seed=0, num_train=n)
    assert out.report["path"]["product_precision"] == "float32"
    exact = compute_spectrum(
        x, variables, config, _config(host_precision="float64"), seed=0, num_train=n
    )
    assert exact.report["path"]["product_precision"] == "float64"
    ref_values, ref_vectors = _reference(module, variables, x, 5)
    # Both stay within 1e-6 (10x inside the target); the float64 path is limited by the
    # float32 features it shares with the float32 path, not by its products.
    for result in (out, exact):
        np.testing.assert_allclose(result.values, ref_values, rtol=1e-6)
        cos = np.linalg.svd(result.vectors @ ref_vectors.T, compute_uv=False).min()
        assert cos > 0.9999
    # The two precisions are different computations (float32 rounding is visible) ...
    assert not np.array_equal(out.values, exact.values)
    # ... and the comparison can fail: a kernel with one sample perturbed is off target.
    y = x.copy()
    y[0] *= 1.01
    other = compute_spectrum(y, variables, config, _config(), seed=0, num_train=n)
    assert np.max(np.abs(other.values - ref_values) / ref_values) > 1e-6


def test_gram_stays_on_the_host_when_the_device_is_too_small():
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    out = compute_spectrum(
        x,
        variables,
        MLP,
        _config(device="device", device_memory_gb=1e-6, device_precision="float64"),
        seed=0,
        num_train=40,
    )
    path = out.report["path"]
    assert (path["products"], path["gram"], path["eigensolver"]) == ("device", "host", "host")
    assert path["gram_bytes"] > path["device_memory_bytes"]
    assert path["device_max_krylov_blocks"] is None


def test_resnet_zero_columns_are_dropped_and_recorded():
    module, variables, x = _case(RESNET, (4, 4, 3), 12)
    out = compute_spectrum(x, variables, RESNET, _config(num_eigvecs=3), seed=0, num_train=8)
    zero = out.report["zero_columns"]
    assert zero["enabled"] and zero["checked_samples"] == 12
    assert zero["dropped_params"] > 0.5 * out.report["num_params"]
    assert zero["kept_params"] + zero["dropped_params"] == out.report["num_params"]
    assert out.report["plan"]["feature_dim"] == zero["kept_params"]
    ref_values, _ = _reference(module, variables, x, 3)
    np.testing.assert_allclose(out.values, ref_values, rtol=1e-5)
    full = compute_spectrum(
        x, variables, RESNET, _config(num_eigvecs=3, drop_zero_columns=False), seed=0, num_train=8
    )
    assert full.report["zero_columns"] == {"enabled": False}
    assert full.report["plan"]["feature_dim"] == out.report["num_params"]
    np.testing.assert_allclose(full.values, out.values, rtol=1e-6)


def test_short_grams_write_no_tiles_unless_asked(tmp_path):
    """``resume_after_s`` (default 30 s): a Gram that finishes sooner persists nothing;
    with 0 every tile is written. The report says which, and the spectra are equal."""
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    factory = GramBlockStoreFactory(tmp_path)
    kw = dict(seed=0, num_train=40, tile_store=factory)
    default = compute_spectrum(x, variables, MLP, _config(resume=True, block_size=16), **kw)
    key = default.report["gram_fingerprint"]
    assert factory(key).keys() == []
    assert default.report["gram_tiles"] == {"reused": 0, "written": 0, "resume_after_s": 30.0}
    # Negative control: resume_after_s=0 writes all six tiles, and says so.
    eager = compute_spectrum(
        x, variables, MLP, _config(resume=True, resume_after_s=0, block_size=16), **kw
    )
    assert len(factory(key).keys()) == 6
    assert eager.report["gram_tiles"]["written"] == 6
    np.testing.assert_array_equal(eager.values, default.values)
    with pytest.raises(ConfigError, match="resume_after_s"):
        _config(resume_after_s=-1)


def test_blas_threads_do_not_follow_the_load_unless_asked(monkeypatch):
    """``ntk.blas_threads: all`` (default) uses every core whatever other processes do, so
    the same machine gives the same bits; ``free`` follows the measured load (and the
    rounding of BLAS/LAPACK with it); a count is taken as given."""
    from linearized_kedro.core import sharding

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    cores = os.cpu_count() or 1
    monkeypatch.setattr(sharding, "busy_cores", lambda: float(cores))  # all cores busy
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    run = functools.partial(compute_spectrum, x, variables, MLP, seed=0, num_train=40)
    assert run(_config()).report["blas_threads"] == cores
    assert run(_config(blas_threads=1)).report["blas_threads"] == 1
    # Negative control: "free" gives the busy machine a single thread.
    assert run(_config(blas_threads="free")).report["blas_threads"] == 1
    with pytest.raises(ConfigError, match="blas_threads"):
        _config(blas_threads=0)
    with pytest.raises(ConfigError, match="blas_threads"):
        _config(blas_threads="some")


def test_interrupted_run_resumes_with_identical_result(tmp_path):
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    factory = GramBlockStoreFactory(tmp_path)
    # resume_after_s=0: every tile is written as it finishes (a tiny Gram would otherwise
    # finish within the default 30 s and write none).
    config = _config(resume=True, resume_after_s=0, block_size=16)  # 3 blocks -> 6 tiles
    full = compute_spectrum(x, variables, MLP, config, seed=0, num_train=40, tile_store=factory)
    key = full.report["gram_fingerprint"]
    assert key and len(factory(key).keys()) == 6
    store = factory(key)
    for i, j in store.keys()[2:]:  # as if killed after two tiles
        for path in store.directory.glob(f"tile_{i}_{j}.*npy"):  # tile_<i>_<j>[.<digest>].npy
            path.unlink()
    written = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def put(self, tile_key, tile):
            written.append(tile_key)
            self.inner.put(tile_key, tile)

    resumed = compute_spectrum(
        x,
        variables,
        MLP,
        config,
        seed=0,
        num_train=40,
        tile_store=lambda *a: Recording(factory(*a)),
    )
    assert len(written) == 4
    np.testing.assert_array_equal(resumed.values, full.values)
    np.testing.assert_array_equal(resumed.vectors, full.vectors)
    # Negative control: a corrupted stored tile changes the spectrum.
    tile = store.load_all()[(0, 0)]
    for path in store.directory.glob("tile_0_0.*npy"):
        path.unlink()
    store.put((0, 0), tile * 2.0)
    corrupted = compute_spectrum(
        x, variables, MLP, config, seed=0, num_train=40, tile_store=factory
    )
    assert not np.allclose(corrupted.values, full.values)


def test_same_seed_same_arrays():
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    a = compute_spectrum(x, variables, MLP, _config(), seed=3, num_train=40)
    b = compute_spectrum(x, variables, MLP, _config(), seed=3, num_train=40)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_nystrom_is_an_explicit_approximation():
    module, variables, x = _case(MLP, (6, 6, 1), 40)
    out = compute_spectrum(x, variables, MLP, _config(nystrom_landmarks=36), seed=0, num_train=40)
    assert out.report["approximation"] == "nystrom" and out.report["plan"]["landmarks"] == 36
    assert out.report["gram_fingerprint"] is None and np.all(np.isnan(out.report["residuals"]))
    exact, _ = _reference(module, variables, x, 5)
    np.testing.assert_allclose(out.values[:2], exact[:2], rtol=0.1)
    assert np.max(np.abs(out.values / exact - 1)) > 1e-6  # not exact
    with pytest.raises(ValueError, match="exceeds ntk.nystrom_landmarks"):
        compute_spectrum(x, variables, MLP, _config(nystrom_landmarks=3), seed=0, num_train=40)


def test_bad_inputs_and_settings_are_refused(tmp_path):
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    default = _config()

    def run(xs=x, cfg=default, **kw):
        return compute_spectrum(xs, variables, MLP, cfg, **{"seed": 0, "num_train": 40, **kw})

    with pytest.raises(ValueError, match="must be smaller than the number of samples"):
        run(cfg=_config(num_eigvecs=40))
    nan = x.copy()
    nan[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        run(xs=nan)
    with pytest.raises(ValueError, match="do not match the model preset"):
        run(xs=np.zeros((40, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match="must be an integer"):
        run(seed=4.2)
    with pytest.raises(ValueError, match="needs a tile store"):
        run(cfg=_config(resume=True), process_index=0, process_count=2)
    # One process without a store (a notebook): resume has nothing to resume from; it runs.
    assert run(cfg=_config(resume=True)).report["gram_fingerprint"] is None
    with pytest.raises(ConfigError, match="ntk.num_eigvecs must be >= 1"):
        _config(num_eigvecs=0)
    with pytest.raises(ConfigError, match="ntk.device must be one of"):
        _config(device="gpu")
    with pytest.raises(ConfigError, match="Unknown key"):
        compute_spectrum(x, variables, MLP, {"num_eigvec": 3}, seed=0, num_train=40)


def test_worker_and_assembler_share_the_tiles(tmp_path):
    # Two processes simulated in one: process 1 computes its share and returns nothing;
    # process 0 computes the rest, assembles and solves (the real two-process run is in
    # tests/test_distributed.py).
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    factory = GramBlockStoreFactory(tmp_path)
    config = _config(resume=True, block_size=16, distributed_timeout_s=5)
    kw = dict(seed=0, num_train=40, tile_store=factory, process_count=2)
    worker = compute_spectrum(x, variables, MLP, config, process_index=1, **kw)
    assert isinstance(worker, Spectrum) and worker.is_worker and worker.values.size == 0
    assert worker.report["distributed"]["tiles_computed"] == 3
    one = compute_spectrum(x, variables, MLP, _config(block_size=16), seed=0, num_train=40)
    both = compute_spectrum(x, variables, MLP, config, process_index=0, **kw)
    assert both.report["distributed"]["role"] == "assembler"
    np.testing.assert_allclose(both.values, one.values, rtol=1e-12)


def test_assembler_times_out_naming_the_missing_process(tmp_path, monkeypatch):
    from linearized_kedro.experiments import spectrum as exp

    monkeypatch.setattr(exp, "_POLL_SECONDS", 0.05)
    _, variables, x = _case(MLP, (6, 6, 1), 40)
    config = _config(resume=True, block_size=16, distributed_timeout_s=0.2)
    with pytest.raises(TimeoutError, match=r"process\(es\) \[1\]"):
        compute_spectrum(
            x,
            variables,
            MLP,
            config,
            seed=0,
            num_train=40,
            tile_store=GramBlockStoreFactory(tmp_path),
            process_index=0,
            process_count=2,
        )
