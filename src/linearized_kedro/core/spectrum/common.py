"""What every eigensolver shares: the result type, the sign convention, residuals.

Conventions (docs/methods.md §3.1, §4 item 10): eigenvalues in descending order, float64;
eigenvectors as unit-norm **rows** of a (k, N) array; every vector's entry of largest
magnitude is made positive (ties: the first such index); residuals ‖K u − λ u‖ / |λ| are
returned with every result.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

SOLVERS = ("auto", "dense", "block_krylov")
# Relative residual target. Eigenvalue errors are O(residual²·λ/gap) and eigenvector angles
# O(residual·λ/gap): at N=4000, k=100 (LeNet and MLP NTKs, λ100/λ101 within 0.1-0.3 %),
# 1e-5 gave eigenvalues within 5e-11 and top-100 subspace cosines 1 - 1e-10 of float64
# dense eigh, far inside the 1e-5 / 0.9999 targets, with 2 fewer Krylov blocks than 1e-6.
DEFAULT_TOL = 1e-5
DENSE_MAX_N = 1500
# Krylov blocks before float64 polishing takes over (NTK spectra at k = 100 took 7-14).
MAX_BLOCKS = 30


@dataclass
class Eigenpairs:
    """Top eigenpairs of a symmetric PSD kernel matrix.

    Attributes:
        values: (k,) float64, descending.
        vectors: (k, N) float64; row j is the unit-norm eigenvector of ``values[j]``
            (Nyström vectors are only approximately unit-norm/orthogonal).
        residuals: (k,) ‖K u − λ u‖ / |λ| in float64 (NaN where K was not available).
        solver: which solver produced them (``"dense"``, ``"block_krylov"``, ``"nystrom"``).
        info: solver metadata (iterations, tolerance, seed, approximation notes ...).
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    solver: str
    info: dict[str, Any] = field(default_factory=dict)


def apply_sign_convention(vecs: np.ndarray) -> np.ndarray:
    """Flips each row so that its entry of largest magnitude is positive.

    Ties in magnitude are broken by the first index (``np.argmax``), so the result is a
    deterministic function of the subspace direction (docs/methods.md §3.1).

    Args:
        vecs: (k, N) eigenvectors as rows (a single (N,) vector is accepted too).

    Returns:
        Array of the same shape with rows multiplied by ±1.
    """
    v = np.asarray(vecs)
    single = v.ndim == 1
    v2 = v[None, :] if single else v
    if v2.ndim != 2:
        raise ValueError(f"vecs must have shape (k, N); got {v.shape}.")
    if v2.shape[1] == 0:
        return v.copy()
    idx = np.argmax(np.abs(v2), axis=1)
    signs = np.where(v2[np.arange(v2.shape[0]), idx] < 0, -1.0, 1.0).astype(v2.dtype)
    out = v2 * signs[:, None]
    return out[0] if single else out


def eigen_residuals(K: np.ndarray, vals: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Relative residuals ‖K u_j − λ_j u_j‖ / |λ_j| in float64.

    Args:
        K: (N, N) symmetric.
        vals: (k,).
        vecs: (k, N), rows are the vectors u_j.

    Returns:
        (k,) float64 (inf where λ_j = 0).
    """
    K = np.asarray(K)
    vals = np.asarray(vals, dtype=np.float64)
    vecs = np.atleast_2d(np.asarray(vecs, dtype=np.float64))
    if vecs.shape != (vals.shape[0], K.shape[0]):
        raise ValueError(
            f"vecs must have shape (k, N) = ({vals.shape[0]}, {K.shape[0]}); got {vecs.shape}."
        )
    # K is symmetric, so (K U)ᵀ = Uᵀ K with U's rows as vectors.
    r = vecs @ np.asarray(K, dtype=np.float64) - vals[:, None] * vecs
    with np.errstate(divide="ignore"):
        return np.linalg.norm(r, axis=1) / np.abs(vals)


def residuals_from_images(vals: Any, vecs_cols: Any, images: Any, xp: Any = np) -> Any:
    """Relative residuals ‖K u_j − λ_j u_j‖ / |λ_j| from the images K u_j a solver holds.

    Block Krylov computes K·b for every basis vector b as one float64 product, and a Ritz
    vector u = B s has the image (K B) s: it equals K (B s) up to the rounding of the
    other order of summation, about m·ε·‖K‖ for a basis of m vectors (≈ 1e-13·λ₀ at
    m = 770, the floor of ``residual_targets``). Forming K U again would cost a (k, N)·(N, N)
    product, 0.15 s at N = 8 000 on the 2-core CPU, for the same numbers at the digits
    that matter.

    Args:
        vals: (k,) eigenvalues; vecs_cols, images: (N, k) vectors and their images as columns.
        xp: ``numpy`` or ``jax.numpy``.
    """
    r = images - vecs_cols * vals
    return xp.linalg.norm(r, axis=0) / xp.abs(vals)


def check_size(shape: tuple[int, ...], k: Any) -> tuple[int, int]:
    """(N, k) of a square (N, N) Gram and an integer 1 <= k < N, or a ValueError."""
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"K must be a square (N, N) matrix; got shape {tuple(shape)}.")
    n = int(shape[0])
    if not isinstance(k, int | np.integer) or not 1 <= k < n:
        raise ValueError(
            f"k must be an integer with 1 <= k < N = {n}; got {k!r}. For all N eigenpairs "
            "use numpy.linalg.eigh directly."
        )
    return n, int(k)


def check_gram(K: Any, k: int) -> np.ndarray:
    """K as a NumPy array, checked square, finite and with 1 <= k < N."""
    K = np.asarray(K)
    check_size(K.shape, k)
    # A NaN or Inf anywhere makes the sum non-finite, so a finite sum clears K in one
    # read-only pass (no (N, N) boolean temporary: 64 MB at N = 8000); only a non-finite
    # sum, which a huge finite K could also give, needs the elementwise check.
    with np.errstate(over="ignore", invalid="ignore"):
        total = K.sum()
    if not np.isfinite(total) and not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or Inf; recompute the Gram matrix.")
    return K


def check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}.")


def resolve_solver(solver: str, n: int, k: int) -> str:
    """``"auto"`` → dense for N <= DENSE_MAX_N or k > N/4, else block Krylov."""
    check_solver(solver)
    if solver == "auto":
        return "dense" if n <= DENSE_MAX_N or 4 * k > n else "block_krylov"
    return solver


class RitzSchedule:
    """When block Krylov runs Rayleigh–Ritz (an O(m³) eigh of the m×m projected matrix).

    First after 3 blocks, then at the block where the geometric decay of the worst
    residual between the last two checkpoints predicts convergence (at most 4 blocks
    ahead; 2 ahead when the residual did not decay). Running it after every block cost
    more than the K·Q products (measured N=4000, k=100: 7 s of eigh vs 4 s of products).
    """

    def __init__(self, max_blocks: int):
        self.max_blocks = max_blocks
        self.next = min(3, max_blocks)
        self.checks = 0
        self.history: list[tuple[int, float]] = []

    def due(self, it: int) -> bool:
        return it >= self.next or it == self.max_blocks

    def converged(self, it: int, res: np.ndarray, target: np.ndarray, bar: Any) -> bool:
        """True when every residual meets its target or the block budget is spent.

        Args:
            it: the block just added (1-based).
            res, target: (k,) Ritz residual norms and their targets at this checkpoint.
            bar: the tqdm bar over blocks; it ends at 100 % when the solve stops here.
        """
        self.checks += 1
        worst = float(np.max(res / target))
        if worst <= 1.0 or it == self.max_blocks:
            # Converged: the bar says done (100 %), not "stopped at it of max_blocks".
            bar.total = it
            bar.refresh()
            return True
        self.record(it, worst)
        return False

    def record(self, it: int, worst: float) -> None:
        """Records the worst residual/target ratio at block ``it`` (> 1: not converged)."""
        self.history.append((it, worst))
        if len(self.history) >= 2 and self.history[-1][1] < self.history[-2][1]:
            (i0, w0), (i1, w1) = self.history[-2:]
            rate = (w1 / w0) ** (1.0 / (i1 - i0))
            self.next = it + max(1, min(4, math.ceil(math.log(w1) / -math.log(rate))))
        else:
            self.next = it + 2


# Krylov blocks allowed from which the block is narrowed (``krylov_sizes``).
_NARROW_MIN_BLOCKS = 6


def krylov_sizes(n: int, k: int, max_blocks: int) -> tuple[int, int]:
    """(block width b = k + oversampling, number of blocks allowed) for block Krylov.

    The oversampling p keeps the k-th gap away from the block edge. With room for at least
    ``_NARROW_MIN_BLOCKS`` blocks it is k/10, at least 10 and at most 30: at k = 100 that
    is b = 110, where p = 30 (b = 130) computed more columns per block for about as many
    blocks: on the N = 4000, k = 100 Grams, LeNet 0.67 s against 0.83 s (7 blocks each)
    and MLP 1.89 s (15 blocks) against 2.39 s (14), all eigenvalues within 5e-11 of
    float64 dense (``benchmarks/cpu_kernels.py --only krylov_oversampling``); LeNet at
    N = 8000 needs 8 blocks of 110 against 7 of 130, about the same time. With fewer
    blocks allowed (a device short of memory) the float64 subspace iterations that finish
    the job converge at the rate λ_{b+1}/λ_k, so the block stays wide: p = min(k, 30),
    at least 10.
    """
    if max_blocks >= _NARROW_MIN_BLOCKS:
        p = max(10, min(k // 10, 30))
    else:
        p = max(10, min(k, 30))
    b = min(k + p, n)
    return b, max(1, min(max_blocks, n // b))


def residual_targets(theta_k: np.ndarray, theta_1: float, tol: float) -> np.ndarray:
    """Per-pair residual targets: tol·|θ_j|, floored at rounding level 1e-13·θ_1."""
    return np.maximum(tol * np.abs(theta_k), 1e-13 * abs(theta_1))


# Float64 subspace iterations allowed after the Krylov budget is spent.
MAX_POLISH = 20


@dataclass
class RitzBlock:
    """The Ritz pairs block Krylov ends with.

    Attributes:
        theta: (m,) Ritz values, descending.
        U: (N, m) Ritz vectors as columns; KU: K U.
        res: (k,) host residual norms ‖K u_j − θ_j u_j‖ of the top k.
        target: (k,) the residual each pair must reach (``residual_targets``).
        info: solver metadata so far (blocks, block size, Rayleigh–Ritz count).
    """

    theta: Any
    U: Any
    KU: Any
    res: np.ndarray
    target: np.ndarray
    info: dict[str, Any]


class EigenSolver:
    """The eigensolver driver; ``host`` and ``device`` subclasses supply the linear algebra.

    The driver is the same wherever K lives: check K and k, choose the solver, default the
    tolerance, run the dense or the block Krylov solver, and log the result. A subclass
    implements ``prepare`` (K as its float64 array, checked), ``dense``, ``block_krylov``
    (up to the last Ritz block), ``finish`` (residuals from K, descending order, sign
    convention) and the linear algebra of :meth:`polish`.
    """

    label: ClassVar[str] = "top_eigenpairs"
    log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def context(self) -> contextlib.AbstractContextManager:
        """The context every step runs in (e.g. float64 JAX)."""
        return contextlib.nullcontext()

    def prepare(self, K: Any, k: Any) -> tuple[Any, int, int]:
        """(K in float64, N, k), or a ValueError for a bad K or k."""
        raise NotImplementedError

    def dense(self, K: Any, k: int) -> tuple[Any, Any, dict[str, Any]]:
        """(values (k,), vectors (N, k) as columns, info) of a dense eigendecomposition."""
        raise NotImplementedError

    def block_krylov(
        self, K: Any, k: int, seed: int, tol: float, max_blocks: int, progress: bool
    ) -> RitzBlock:
        """The Ritz block of block Krylov, before polishing."""
        raise NotImplementedError

    def matmul(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def orthonormalise(self, Z: Any) -> Any:
        """(N, m) orthonormal basis of Z's columns."""
        raise NotImplementedError

    def small_eigh(self, T: Any, top: int) -> tuple[Any, Any]:
        """Top ``top`` eigenpairs of a small symmetric matrix, descending."""
        raise NotImplementedError

    def residual_norms(self, U: Any, KU: Any, theta: Any) -> np.ndarray:
        """(k,) host array ‖K u_j − θ_j u_j‖ from U (N, k), KU = K U and θ (k,)."""
        raise NotImplementedError

    def polish(self, K: Any, ritz: RitzBlock, k: int) -> tuple[Any, Any, Any, dict[str, Any]]:
        """(values (k,), vectors U (N, k) as columns, their images K U, info) from the Ritz block.

        When the Krylov budget was spent before every residual met its target, float64
        subspace iterations on the Ritz block finish the job (at most ``MAX_POLISH``).
        """
        theta, U, KU, res = ritz.theta, ritz.U, ritz.KU, ritz.res
        polish = 0
        while np.any(res > ritz.target) and polish < MAX_POLISH:
            polish += 1
            V = self.orthonormalise(KU)
            KV = self.matmul(K, V)
            theta, S = self.small_eigh(self.matmul(V.T, KV), V.shape[1])
            U, KU = self.matmul(V, S), self.matmul(KV, S)
            res = self.residual_norms(U[:, :k], KU[:, :k], theta[:k])
        info = {
            **ritz.info,
            "float64_polish_iterations": polish,
            "max_residual": float(np.max(res / np.abs(np.asarray(theta)[:k]))),
        }
        return theta[:k], U[:, :k], KU[:, :k], info

    def finish(
        self, K: Any, vals: Any, vecs: Any, solver: str, info: dict, images: Any = None
    ) -> Eigenpairs:
        """Eigenpairs in descending order and the sign convention, with their residuals.

        The residuals come from ``images`` = K·vecs where the solver has them, else from
        one product with K (see ``residuals_from_images``).
        """
        raise NotImplementedError

    def solve(
        self,
        K: Any,
        k: int,
        *,
        solver: str = "auto",
        seed: int = 0,
        tol: float | None = None,
        progress: bool = False,
        max_blocks: int | None = None,
    ) -> Eigenpairs:
        """The k largest eigenpairs of K (arguments as for ``core.spectrum.top_eigenpairs``)."""
        max_blocks = MAX_BLOCKS if max_blocks is None else int(max_blocks)
        with self.context():
            K, n, k = self.prepare(K, k)
            solver = resolve_solver(solver, n, k)
            tol = DEFAULT_TOL if tol is None else float(tol)
            if solver == "dense":
                vals, vecs, info = self.dense(K, k)
                out = self.finish(K, vals, vecs, solver, info)
            else:
                ritz = self.block_krylov(K, k, seed, tol, max_blocks, progress)
                vals, vecs, images, info = self.polish(K, ritz, k)
                info.update(seed=int(seed), tol=tol, dtype="float64")
                out = self.finish(K, vals, vecs, solver, info, images)
        self.log.info(
            "%s(%s): N=%d, k=%d, λ_1=%.4g, λ_k=%.4g, max residual %.2e.",
            self.label,
            solver,
            n,
            k,
            out.values[0],
            out.values[-1],
            float(np.max(out.residuals)),
        )
        return out
