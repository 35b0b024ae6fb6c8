"""The device eigensolver (JAX, float64) equals the host solver (#11 §1), forced on this CPU.

Same matrices as ``test_spectrum.py`` (known spectrum); the device path starts from the
same seeded block, so converged pairs agree with the host's to far below the tolerance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import known_spectrum, subspace_cos

from linearized_kedro.core import spectrum

N = 300


@pytest.fixture(scope="module")
def gram():
    return known_spectrum(N)


def _on_device(K):
    with jax.enable_x64(True):
        return jnp.asarray(K, jnp.float64)


@pytest.mark.parametrize("solver", ["dense", "block_krylov"])
def test_device_solver_equals_host_solver(gram, solver):
    K, w, V = gram
    k = 40
    host = spectrum.top_eigenpairs(K, k, solver=solver, tol=1e-9)
    dev = spectrum.top_eigenpairs(_on_device(K), k, solver=solver, tol=1e-9)
    assert "device" in dev.info and "device" not in host.info
    assert dev.solver == solver and dev.values.dtype == np.float64
    assert dev.vectors.shape == (k, N)
    np.testing.assert_allclose(dev.values, host.values, rtol=1e-12)
    np.testing.assert_allclose(dev.vectors, host.vectors, atol=1e-9)  # same sign convention
    np.testing.assert_allclose(dev.values, w[:k], rtol=1e-10)
    assert subspace_cos(dev.vectors, V[:k]) > 1 - 1e-10
    assert np.max(dev.residuals) < 1e-8
    np.testing.assert_allclose(
        dev.residuals, spectrum.eigen_residuals(K, dev.values, dev.vectors), rtol=1e-6, atol=1e-14
    )
    if solver == "block_krylov":
        assert dev.info["krylov_blocks"] == host.info["krylov_blocks"]
    # Negative control: another matrix gives other eigenvalues.
    other = spectrum.top_eigenpairs(_on_device(K * 1.0001), k, solver=solver, tol=1e-9)
    assert np.max(np.abs(other.values / host.values - 1)) > 5e-5


def test_polishing_when_the_block_budget_is_spent(gram):
    K, w, _ = gram
    dev = spectrum.device_top_eigenpairs(K, 20, solver="block_krylov", tol=1e-8, max_blocks=1)
    assert dev.info["krylov_blocks"] == 1 and dev.info["float64_polish_iterations"] > 0
    np.testing.assert_allclose(dev.values, w[:20], rtol=1e-10)


def test_device_solver_bytes_grow_with_n():
    small = spectrum.device_solver_bytes(10_000, 100, max_blocks=12)
    big = spectrum.device_solver_bytes(60_000, 1000, max_blocks=12)
    assert 0 < small < big < 60_000**2 * 8  # 12 blocks: below the Gram itself
    assert (
        spectrum.device_solver_bytes(1000, 10, solver="auto") == 3 * 8 * 1000**2
    )  # dense for N <= 1500


def test_krylov_blocks_are_capped_by_device_memory():
    n, k = 60_000, 1000
    full = spectrum.device_solver_bytes(n, k)
    assert spectrum.device_max_blocks(n, k, full) == 30
    capped = spectrum.device_max_blocks(n, k, full // 2)
    assert 3 <= capped < 30
    assert spectrum.device_solver_bytes(n, k, max_blocks=capped) <= full // 2
    assert spectrum.device_max_blocks(n, k, 10**6) is None  # not even 3 blocks
    assert spectrum.device_max_blocks(1000, 10, 10**9) == 30  # dense fits
