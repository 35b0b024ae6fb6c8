"""Eigensolver tests against numpy.linalg.eigh on matrices of known spectrum (docs/methods.md §3.1)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from reference import known_spectrum, subspace_cos

from linearized_kedro.core import spectrum
from linearized_kedro.core.spectrum import common

N = 300


@pytest.fixture(scope="module")
def gram():
    return known_spectrum(N)


@pytest.mark.parametrize("solver", ["dense", "block_krylov"])
def test_top_eigenpairs_match_reference(gram, solver):
    K, w, V = gram
    k = 40
    e = spectrum.top_eigenpairs(K, k, solver=solver, tol=1e-9)
    assert e.solver == solver and e.values.dtype == np.float64
    assert e.vectors.shape == (k, N)
    np.testing.assert_allclose(e.values, w[:k], rtol=1e-10)
    assert np.all(np.diff(e.values) <= 0)
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1.0, rtol=1e-12)
    for j in (10, 40):
        assert subspace_cos(e.vectors[:j], V[:j]) > 1 - 1e-10
    assert np.max(e.residuals) < 1e-8
    # Block Krylov reports residuals from its images K·U: equal to a product with K up to
    # float64 rounding of ‖K‖ = λ₀ ≈ 1 (common.residuals_from_images).
    np.testing.assert_allclose(
        e.residuals, spectrum.eigen_residuals(K, e.values, e.vectors), rtol=1e-6, atol=1e-13
    )
    assert e.info["residuals_from"] == ("K" if solver == "dense" else "krylov_images")


def test_solvers_agree_on_float32_input(gram):
    K = gram[0].astype(np.float32)
    a = spectrum.top_eigenpairs(K, 20, solver="dense")
    b = spectrum.top_eigenpairs(K, 20, solver="block_krylov")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-9)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)  # same sign convention


def test_block_krylov_is_deterministic(gram):
    K = gram[0]
    a = spectrum.top_eigenpairs(K, 15, solver="block_krylov", seed=3)
    b = spectrum.top_eigenpairs(K, 15, solver="block_krylov", seed=3)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.info["seed"] == 3


def test_sign_convention():
    v = np.array([[0.1, -0.9, 0.3], [0.5, -0.5, 0.2], [-0.6, 0.0, 0.6]])
    out = spectrum.apply_sign_convention(v)
    np.testing.assert_array_equal(out[0], -v[0])  # largest |entry| made positive
    np.testing.assert_array_equal(out[1], v[1])  # tie: the first index wins
    np.testing.assert_array_equal(out[2], -v[2])
    np.testing.assert_array_equal(spectrum.apply_sign_convention(-v), out)
    np.testing.assert_array_equal(spectrum.apply_sign_convention(out), out)


def test_residuals_from_images_are_the_residuals_of_k(gram):
    K, w, V = gram
    e = spectrum.top_eigenpairs(K, 10, solver="block_krylov", tol=1e-9)
    U = e.vectors.T
    from_k = spectrum.eigen_residuals(K, e.values, e.vectors)
    assert from_k.max() < 1e-8
    np.testing.assert_allclose(
        common.residuals_from_images(e.values, U, K @ U), from_k, rtol=1e-6, atol=1e-14
    )
    # Negative control: the images of a K perturbed by 1e-6 of its norm give residuals of
    # that size, not the solver's.
    E = np.random.default_rng(0).standard_normal(K.shape)
    E = (E + E.T) / np.linalg.norm(E + E.T, 2)
    wrong = common.residuals_from_images(e.values, U, (K + 1e-6 * w[0] * E) @ U)
    assert np.min(wrong) > 10 * from_k.max()


def test_eigen_residuals_detect_wrong_pairs(gram):
    K, w, V = gram
    assert np.max(spectrum.eigen_residuals(K, w[:3], V[:3])) < 1e-10
    assert np.min(spectrum.eigen_residuals(K, w[:3] * 1.01, V[:3])) > 5e-3


def test_nystrom_with_all_landmarks_is_exact(gram):
    K, w, V = gram
    idx = np.random.default_rng(1).permutation(N)
    e = spectrum.nystrom_eigenpairs(K[:, idx], idx, 25)
    assert e.solver == "nystrom" and "Nyström" in e.info["approximation"]
    np.testing.assert_allclose(e.values, w[:25], rtol=1e-9)
    np.testing.assert_allclose(e.vectors, spectrum.apply_sign_convention(V[:25]), atol=1e-8)


def test_nystrom_drops_tiny_eigenvalues():
    rng = np.random.default_rng(2)
    F = rng.standard_normal((N, 5))
    K = F @ F.T  # rank 5
    idx = rng.choice(N, 40, replace=False)
    e = spectrum.nystrom_eigenpairs(K[:, idx], idx, 20)
    assert e.values.shape == (5,) and e.info["dropped"] == 15
    assert np.all(e.values > 0) and np.all(np.isfinite(e.vectors))
    # Without the cut-off, dividing by round-off eigenvalues would blow vectors up.
    assert np.max(np.abs(e.vectors)) < 10


@pytest.mark.parametrize("device", [False, True], ids=["host", "device"])
def test_bad_inputs(gram, device):
    K = gram[0]
    solve = functools.partial(spectrum.top_eigenpairs, device=device)
    assert solve(K, 3).values.shape == (3,)  # control: the same call with good inputs
    with pytest.raises(ValueError, match="1 <= k < N"):
        solve(K, N)
    with pytest.raises(ValueError, match="1 <= k < N"):
        solve(K, 0)
    with pytest.raises(ValueError, match="square"):
        solve(K[:, :10], 3)
    with pytest.raises(ValueError, match="NaN"):
        solve(np.full((4, 4), np.nan), 2)
    with pytest.raises(ValueError, match="Unknown solver"):
        solve(K, 3, solver="arpack")


def test_non_finite_grams_are_refused_and_huge_finite_ones_are_not(gram):
    K = gram[0]
    for row, col, bad in ((3, 5, np.nan), (0, 0, np.inf), (7, 2, -np.inf)):
        broken = K.copy()
        broken[row, col] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            common.check_gram(broken, 3)
    both = K.copy()
    both[1, 1], both[2, 2] = np.inf, -np.inf  # their sum is NaN: still refused
    with pytest.raises(ValueError, match="NaN or Inf"):
        common.check_gram(both, 3)
    # Control: finite entries whose sum overflows to Inf are finite, so accepted.
    huge = np.full((6, 6), 1e308)
    with np.errstate(over="ignore"):
        assert not np.isfinite(huge.sum())
    assert common.check_gram(huge, 2) is huge


def test_krylov_block_is_narrow_only_with_room_for_blocks():
    # p = k/10 in [10, 30] with >= 6 blocks allowed; a wide block (p = min(k, 30)) for the
    # polishing that finishes a short budget (test_spectrum_device's polishing test fails
    # with the narrow one).
    assert common.krylov_sizes(4000, 100, 30) == (110, 30)
    assert common.krylov_sizes(4000, 100, 3) == (130, 3)
    assert common.krylov_sizes(60000, 1000, 30) == (1030, 30)
    assert common.krylov_sizes(300, 20, 30) == (30, 10)
    assert common.krylov_sizes(300, 20, 1) == (40, 1)


def test_bad_nystrom_inputs(gram):
    K = gram[0]
    with pytest.raises(ValueError, match="distinct"):
        spectrum.nystrom_eigenpairs(K[:, [0, 0]], np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="k must"):
        spectrum.nystrom_eigenpairs(K[:, :3], np.arange(3), 4)


def test_block_krylov_on_flat_spectrum_meets_benchmark_targets():
    # MLP-like NTK spectrum: a dominant top eigenvalue, then a slow decay with a 0.1 % gap
    # at k (the regime where the checkpointed Rayleigh–Ritz needs many blocks). Default tol.
    rng = np.random.default_rng(7)
    n, k = 600, 30
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[40.0], 2.0 * 0.995 ** np.arange(n - 1)])
    lam[k:] *= 0.999  # 0.1 % gap between λ_k and λ_{k+1}
    K = (Q * lam) @ Q.T
    e = spectrum.top_eigenpairs(K, k, solver="block_krylov")
    order = np.argsort(-lam)
    w, V = lam[order], Q[:, order].T
    assert e.info["rayleigh_ritz"] < e.info["krylov_blocks"]  # checkpoints, not every block
    np.testing.assert_allclose(e.values, w[:k], rtol=1e-5)
    assert subspace_cos(e.vectors, V[:k]) >= 0.9999
    assert e.residuals.max() <= 1e-5
