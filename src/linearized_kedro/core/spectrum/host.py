"""Top eigenpairs of a Gram matrix held in host memory (NumPy/SciPy, float64).

Solvers:

* ``"dense"``: LAPACK ``syevr`` through ``scipy.linalg.eigh(subset_by_index=...)`` in
  float64. O(N³); the reference.
* ``"block_krylov"``: randomised block Krylov (block Lanczos with full
  re-orthogonalisation) for the top k, all in float64: a block of k + p vectors (p =
  oversampling) is extended by K Q products until the Rayleigh–Ritz residuals of the top
  k reach ``tol``; eigenvalues are then accurate to O(residual²). Rayleigh–Ritz (an O(m³)
  eigh of the m×m projected matrix) runs only at checkpoints predicted from the residual
  decay, and each new block is orthogonalised by one full Gram–Schmidt pass (a second
  only on heavy cancellation) plus Cholesky-QR2. At
  N=4000, k=100 this cut the MLP NTK from 28 s to 7 s and LeNet's from 8 s to 3 s
  (loaded 2-core CPU). float32 products were tried and rejected: NTK spectra span ~10³
  over the top 100, so float32 rounding of K Q (~1e-7‖K‖) leaves tail residuals near
  1e-3. If the residuals ever miss ``tol`` when the block budget is spent, float64
  subspace iterations polish the Ritz vectors.

``core.spectrum.device`` runs the same block Krylov method with JAX on an accelerator.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from .. import sharding
from .common import (
    Eigenpairs,
    EigenSolver,
    RitzBlock,
    RitzSchedule,
    apply_sign_convention,
    check_gram,
    eigen_residuals,
    krylov_sizes,
    residual_targets,
    residuals_from_images,
)

log = logging.getLogger(__name__)


def _finish(vals, vecs_cols, K64, solver, info, images=None) -> Eigenpairs:
    order = np.argsort(-vals, kind="stable")
    if images is None:
        vals = np.asarray(vals[order], dtype=np.float64)
        vecs = apply_sign_convention(np.ascontiguousarray(vecs_cols[:, order].T))
        res = eigen_residuals(K64, vals, vecs)
    else:
        # From the solver's images K·U (exact float64 products, ``residuals_from_images``),
        # not from the Lanczos estimates of its checkpoints.
        res = residuals_from_images(vals, vecs_cols, images)[order]
        vals = np.asarray(vals[order], dtype=np.float64)
        vecs = apply_sign_convention(np.ascontiguousarray(vecs_cols[:, order].T))
    info["residuals_from"] = "K" if images is None else "krylov_images"
    return Eigenpairs(vals, vecs, res, solver, info)


def _dense(K64: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = K64.shape[0]
    vals, vecs = scipy.linalg.eigh(
        K64, subset_by_index=[n - k, n - 1], driver="evr", check_finite=False
    )
    return vals, vecs


def _one_thread():
    # Small LAPACK calls (QR, Cholesky, eigh of the projected matrix) run single-threaded:
    # on the shared 2-core CPU, multithreaded OpenBLAS took 3.3 s for a 4000x150 QR that
    # takes 0.1 s on one thread. The large K @ Q products keep all threads.
    return sharding.blas_limit(1)


# From this size on the projected matrix's eigh runs on the granted BLAS threads: measured
# on the 2-core CPU (idle), m = 1820 (the MLP's 14 Krylov blocks at k = 100) took 0.37 s on
# one thread and 0.25 s on two; at m = 910 the two were within 0.02 s.
_THREADED_EIGH_MIN = 1024


def _small_eigh(T: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``top`` eigenpairs of a small symmetric matrix, descending."""
    m = T.shape[0]
    threads = sharding.granted_host_threads() if m >= _THREADED_EIGH_MIN else 1
    with sharding.blas_limit(threads):
        theta, S = scipy.linalg.eigh(
            0.5 * (T + T.T), subset_by_index=[m - top, m - 1], driver="evr", check_finite=False
        )
    return theta[::-1], S[:, ::-1]


def _orthonormalise(Z: np.ndarray) -> np.ndarray:
    """Orthonormal basis of Z's columns: Cholesky-QR twice (all GEMM), Householder fallback."""
    with _one_thread():
        return _cholqr2(Z)


def _cholqr2(Z: np.ndarray) -> np.ndarray:
    for _ in range(2):
        try:
            R = np.linalg.cholesky(Z.T @ Z).T
        except np.linalg.LinAlgError:
            return np.linalg.qr(Z)[0]  # numerically rank-deficient block
        Z = scipy.linalg.solve_triangular(R, Z.T, trans="T", check_finite=False).T
    return Z


def _project_out(Z: np.ndarray, B: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Z minus its projection on the orthonormal columns of B, given C = Bᵀ Z.

    One classical Gram–Schmidt step with the coefficients the projected matrix T already
    holds (Bᵀ K Q_j is T's new column), then a second full pass ("twice is enough") only
    when the block lost more than 3 orders of magnitude, where rounding of the first pass
    could leave an overlap above ~1e-13.
    """
    norm0 = np.linalg.norm(Z, axis=0)
    Z = Z - B @ coefficients
    if np.min(np.linalg.norm(Z, axis=0) / np.maximum(norm0, 1e-300)) < 1e-3:
        Z = Z - B @ (B.T @ Z)
    return Z


def _block_krylov(
    K64: np.ndarray, k: int, seed: int, tol: float, max_blocks: int, progress: bool
) -> RitzBlock:
    n = K64.shape[0]
    b, max_blocks = krylov_sizes(n, k, max_blocks)
    rng = np.random.default_rng(seed)
    # The basis B and its images KB are preallocated (growing hstack copies were
    # measurable) and stored as rows, Bᵀ and (KB)ᵀ, so that each block is one contiguous
    # slab and only the blocks used are ever touched. Stored as (N, b·max_blocks) columns,
    # the first block alone touched every page of both arrays (2 × 125 MB at N = 4000,
    # k = 100): 0.5 s of page faults before any arithmetic.
    Bt = np.empty((b * max_blocks, n))
    KBt = np.empty_like(Bt)
    Bt[:b] = _orthonormalise(K64 @ rng.standard_normal((n, b))).T
    T = np.zeros((0, 0))
    bar = tqdm(total=max_blocks, desc="block Krylov", disable=not progress)
    schedule = RitzSchedule(max_blocks)
    for it in range(1, max_blocks + 1):
        m0, m = (it - 1) * b, it * b
        KBt[m0:m] = Bt[m0:m] @ K64  # (K Q_it)ᵀ, K symmetric
        # Grow the projected matrix T = Bᵀ K B by one block row/column.
        new = Bt[:m] @ KBt[m0:m].T
        T = np.block([[T, new[:m0]], [new[:m0].T, new[m0:]]])
        # The next block before normalisation, W = (I − BBᵀ) K Q_it.
        W = _project_out(KBt[m0:m].T, Bt[:m].T, new)
        bar.update(1)
        if schedule.due(it):
            theta, S = _small_eigh(T, b)
            # Lanczos residuals: for u = B s, K u − θ u = (I − BBᵀ) K B s = W s_it, s_it the
            # last block's rows of s (the earlier blocks' images lie in span(B) up to
            # rounding): no N-sized Ritz vectors are formed at a checkpoint.
            res = np.linalg.norm(W @ S[m0:m, :k], axis=0)
            target = residual_targets(theta[:k], theta[0], tol)
            if schedule.converged(it, res, target, bar):
                break
        Bt[m : m + b] = _orthonormalise(W).T
    bar.close()
    info = {
        "krylov_blocks": it,
        "block_size": b,
        "basis_size": m,
        "rayleigh_ritz": schedule.checks,
    }
    # The true residuals decide; they also cover rounding in the estimates above.
    U, KU = Bt[:m].T @ S, KBt[:m].T @ S
    res = _residual_norms(U[:, :k], KU[:, :k], theta[:k])
    return RitzBlock(theta, U, KU, res, target, info)


def _residual_norms(U: np.ndarray, KU: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return np.linalg.norm(KU - U * theta, axis=0)


class HostSolver(EigenSolver):
    """The eigensolver on a NumPy Gram, all in float64 (module docstring)."""

    label = "top_eigenpairs"
    log = logging.getLogger(__name__)

    def prepare(self, K, k):
        K = check_gram(K, k)
        return np.asarray(K, dtype=np.float64), K.shape[0], int(k)

    def dense(self, K, k):
        vals, vecs = _dense(K, k)
        return vals, vecs, {"driver": "syevr", "dtype": "float64"}

    def block_krylov(self, K, k, seed, tol, max_blocks, progress):
        return _block_krylov(K, k, seed, tol, max_blocks, progress)

    def matmul(self, a, b):
        return a @ b

    def orthonormalise(self, Z):
        return _orthonormalise(Z)

    def small_eigh(self, T, top):
        return _small_eigh(T, top)

    def residual_norms(self, U, KU, theta):
        return _residual_norms(U, KU, theta)

    def finish(self, K, vals, vecs, solver, info, images=None):
        return _finish(vals, vecs, K, solver, info, images)


def host_top_eigenpairs(K: np.ndarray, k: int, **options: Any) -> Eigenpairs:
    """The k largest eigenpairs of a symmetric PSD (N, N) host matrix, in float64.

    Args:
        K: (N, N) symmetric Gram matrix (float32 or float64).
        k: number of eigenpairs, 1 <= k < N.
        **options: ``solver`` (``"auto"``, ``"dense"`` or ``"block_krylov"``, module
            docstring), ``seed``, ``tol``, ``progress``, ``max_blocks``, as for
            ``core.spectrum.top_eigenpairs``.

    Returns:
        ``Eigenpairs`` with values (k,) descending, vectors (k, N) unit rows in the sign
        convention of ``apply_sign_convention``, and float64 residuals.

    Raises:
        ValueError: K not square/finite, k out of range, or unknown solver.
    """
    return HostSolver().solve(K, k, **options)
