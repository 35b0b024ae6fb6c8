"""Top eigenpairs of a Gram matrix held on the accelerator (JAX, float64) (#11 §1).

The same methods as ``core.spectrum.host``, with every O(N²) and O(N·m) operation on the
device: the K·Q products, the projected matrix T = Bᵀ K B, the Gram–Schmidt passes and
Cholesky-QR2 of the Krylov blocks, the Rayleigh–Ritz eigh of T and the final residuals.
Only the seed's starting block (from NumPy, so both paths start from the same vectors), a
few scalars per checkpoint and the (k, N) result cross to the host. Everything runs in
float64 (``jax.enable_x64`` inside this module only), so the accuracy targets of the host
path hold unchanged.

Memory on the device: K (8·N² bytes) plus the basis and its images (2·8·N·m, m = basis
size <= (k + p)·max_blocks) plus T (8·m²); ``device_solver_bytes`` estimates the peak.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from tqdm.auto import tqdm

from .common import (
    MAX_BLOCKS,
    Eigenpairs,
    EigenSolver,
    RitzBlock,
    RitzSchedule,
    apply_sign_convention,
    check_size,
    krylov_sizes,
    residual_targets,
    residuals_from_images,
    resolve_solver,
)

log = logging.getLogger(__name__)


def _x64():
    return jax.enable_x64(True)


def _hi():
    return jax.default_matmul_precision("highest")


def device_solver_bytes(
    n: int, k: int, solver: str = "block_krylov", max_blocks: int = MAX_BLOCKS
) -> int:
    """Peak device bytes of ``device_top_eigenpairs`` besides K itself.

    Block Krylov: the basis and its images (2 · 8·N·m, m = (k + p)·max_blocks), one more
    N×m temporary of the Gram–Schmidt and Ritz products, T and its eigenvectors (2 · 8·m²).
    Dense: the eigenvectors and the eigensolver's workspace (~3 · 8·N²).
    """
    if resolve_solver(solver, n, k) == "dense":
        return 3 * 8 * n * n
    b, blocks = krylov_sizes(n, k, max_blocks)
    m = b * blocks
    return 8 * (3 * n * m + 2 * m * m + 4 * n * b)


def device_max_blocks(n: int, k: int, available_bytes: int, solver: str = "auto") -> int | None:
    """The most Krylov blocks (<= ``MAX_BLOCKS``) whose workspace fits ``available_bytes``.

    Returns ``MAX_BLOCKS`` for the dense solver when it fits, and None when not even 3
    blocks (or the dense workspace) fit: then the eigensolver should run on the host.
    Fewer blocks than needed are safe: unconverged pairs are polished by float64 subspace
    iterations.
    """
    if resolve_solver(solver, n, k) == "dense":
        return MAX_BLOCKS if device_solver_bytes(n, k, solver) <= available_bytes else None
    for blocks in range(MAX_BLOCKS, 2, -1):
        if device_solver_bytes(n, k, "block_krylov", blocks) <= available_bytes:
            return blocks
    return None


@jax.jit
def _matmul(a, b):
    with _hi():
        return a @ b


@jax.jit
def _cholqr2(Z):
    """Cholesky-QR twice; ``ok`` is False when the block is numerically rank-deficient."""
    ok = jnp.asarray(True)
    with _hi():
        for _ in range(2):
            L = jnp.linalg.cholesky(Z.T @ Z)
            ok = ok & jnp.all(jnp.isfinite(L))
            Z = jax.scipy.linalg.solve_triangular(L, Z.T, lower=True).T
    return Z, ok


@jax.jit
def _householder(Z):
    return jnp.linalg.qr(Z)[0]


def _orthonormalise(Z):
    Q, ok = _cholqr2(Z)
    return Q if bool(ok) else _householder(Z)


@jax.jit
def _project_out(Z, B, coefficients):
    """Z minus its projection on span(B) given C = Bᵀ Z, a second full pass when the block
    lost more than 3 orders of magnitude (see ``host._project_out``)."""
    with _hi():
        norm0 = jnp.linalg.norm(Z, axis=0)
        Z = Z - B @ coefficients
        lost = jnp.min(jnp.linalg.norm(Z, axis=0) / jnp.maximum(norm0, 1e-300)) < 1e-3
        return lax.cond(lost, lambda z: z - B @ (B.T @ z), lambda z: z, Z)


@functools.partial(jax.jit, static_argnames="b")
def _small_eigh(T, b: int):
    """Top b eigenpairs of the projected matrix, descending."""
    theta, S = jnp.linalg.eigh(0.5 * (T + T.T))
    return theta[::-1][:b], S[:, ::-1][:, :b]


@functools.partial(jax.jit, static_argnames="k")
def _lanczos_residuals(W, S_last, k: int):
    with _hi():
        return jnp.linalg.norm(W @ S_last[:, :k], axis=0)


@functools.partial(jax.jit, static_argnames="k")
def _ritz_vectors(B, KB, S, theta, k: int):
    with _hi():
        U, KU = B @ S, KB @ S
        res = jnp.linalg.norm(KU[:, :k] - U[:, :k] * theta[:k], axis=0)
    return U, KU, res


@jax.jit
def _grow(T, new):
    """T = Bᵀ K B grown by one block row/column ``new`` = B_allᵀ K B_new (m, b)."""
    m0 = T.shape[0]
    top = jnp.concatenate([T, new[:m0]], axis=1)
    bottom = jnp.concatenate([new[:m0].T, new[m0:]], axis=1)
    return jnp.concatenate([top, bottom], axis=0)


@jax.jit
def _relative_residuals(K, vals, U):
    with _hi():
        r = K @ U - U * vals
    return jnp.linalg.norm(r, axis=0) / jnp.abs(vals)


def _block_krylov(K, k: int, seed: int, tol: float, max_blocks: int, progress: bool):
    n = K.shape[0]
    b, max_blocks = krylov_sizes(n, k, max_blocks)
    rng = np.random.default_rng(seed)
    start = jnp.asarray(rng.standard_normal((n, b)))
    blocks = [_orthonormalise(_matmul(K, start))]
    images: list[Any] = []
    T = jnp.zeros((0, 0))
    bar = tqdm(total=max_blocks, desc="block Krylov (device)", disable=not progress)
    schedule = RitzSchedule(max_blocks)
    for it in range(1, max_blocks + 1):
        images.append(_matmul(K, blocks[-1]))
        B = jnp.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
        new = _matmul(B.T, images[-1])
        T = _grow(T, new)
        W = _project_out(images[-1], B, new)  # (I − BBᵀ) K Q_it, see host._block_krylov
        bar.update(1)
        if schedule.due(it):
            theta, S = _small_eigh(T, b)
            res = np.asarray(_lanczos_residuals(W, S[-b:], k))
            theta_h = np.asarray(theta)
            target = residual_targets(theta_h[:k], theta_h[0], tol)
            if schedule.converged(it, res, target, bar):
                break
        blocks.append(_orthonormalise(W))
    bar.close()
    m = B.shape[1]
    info = {
        "krylov_blocks": it,
        "block_size": b,
        "basis_size": m,
        "rayleigh_ritz": schedule.checks,
    }
    KB = jnp.concatenate(images, axis=1) if len(images) > 1 else images[0]
    U, KU, res = _ritz_vectors(B, KB, S, theta, k)
    return RitzBlock(theta, U, KU, np.asarray(res), target, info)


class DeviceSolver(EigenSolver):
    """The eigensolver on the default device, in float64 JAX (module docstring)."""

    label = "device top_eigenpairs"
    log = logging.getLogger(__name__)

    def context(self):
        return _x64()

    def prepare(self, K, k):
        K = jnp.asarray(K, jnp.float64)
        n, k = check_size(K.shape, k)
        if not bool(jnp.all(jnp.isfinite(K))):
            raise ValueError("K contains NaN or Inf; recompute the Gram matrix.")
        return K, n, k

    def dense(self, K, k):
        w, V = jnp.linalg.eigh(K)
        return w[::-1][:k], V[:, ::-1][:, :k], {"driver": "jnp.linalg.eigh", "dtype": "float64"}

    def block_krylov(self, K, k, seed, tol, max_blocks, progress):
        return _block_krylov(K, k, seed, tol, max_blocks, progress)

    def matmul(self, a, b):
        return _matmul(a, b)

    def orthonormalise(self, Z):
        return _orthonormalise(Z)

    def small_eigh(self, T, top):
        return _small_eigh(T, top)

    def residual_norms(self, U, KU, theta):
        return np.asarray(jnp.linalg.norm(KU - U * theta, axis=0))

    def finish(self, K, vals, vecs, solver, info, images=None):
        if images is None:
            res = np.asarray(_relative_residuals(K, vals, vecs))
        else:
            res = np.asarray(residuals_from_images(vals, vecs, images, jnp))
        info["residuals_from"] = "K" if images is None else "krylov_images"
        vals_h = np.asarray(vals, np.float64)
        rows = np.asarray(vecs, np.float64).T
        info["device"] = str(K.devices().pop().device_kind) if hasattr(K, "devices") else None
        order = np.argsort(-vals_h, kind="stable")
        return Eigenpairs(
            vals_h[order],
            apply_sign_convention(np.ascontiguousarray(rows[order])),
            res[order],
            solver,
            info,
        )


def device_top_eigenpairs(K: Any, k: int, **options: Any) -> Eigenpairs:
    """The k largest eigenpairs of a symmetric PSD (N, N) matrix, on the default device.

    Args:
        K: (N, N) Gram, a float64 device array (e.g. ``ntk_gram(..., gram_on_device=True)``)
            or a host array (copied to the device).
        k: number of eigenpairs, 1 <= k < N.
        **options: ``solver`` (``"auto"``, ``"dense"`` (``jnp.linalg.eigh``) or
            ``"block_krylov"``), ``seed`` (NumPy, the same starting block as the host
            solver), ``tol``, ``progress``, ``max_blocks``, as for
            ``core.spectrum.top_eigenpairs``.

    Returns:
        ``Eigenpairs`` exactly as the host solver returns them (values (k,) descending,
        vectors (k, N) in the sign convention, float64 residuals from K), with
        ``info["device"]`` naming the device.

    Raises:
        ValueError: K not square/finite, k out of range, or unknown solver.
    """
    return DeviceSolver().solve(K, k, **options)
