"""Nyström approximation of the top eigenpairs from m landmark columns (docs/methods.md §3.1)."""

from __future__ import annotations

import numpy as np

from .common import Eigenpairs, apply_sign_convention


def nystrom_eigenpairs(
    K_nm: np.ndarray, landmark_idx: np.ndarray, k: int, *, rtol: float = 1e-10
) -> Eigenpairs:
    """Nyström approximation of the top eigenpairs from the columns of m landmarks.

    With K_mm = K_nm[landmark_idx] (m, m) = U Λ Uᵀ (dense float64 eigh):
    λ̂_j = (N/m) λ_j and û_j = √(m/N) K_nm u_j / λ_j (docs/methods.md §3.1). Directions with
    λ_j <= rtol·λ_1 are dropped, since dividing by them amplifies noise. Landmarks are
    chosen by the caller (randomly, from a seed). With m = N this is exact.

    Args:
        K_nm: (N, m) kernel between all samples and the landmarks, columns in
            ``landmark_idx`` order.
        landmark_idx: (m,) distinct row indices of the landmarks in [0, N).
        k: number of eigenpairs wanted, 1 <= k <= m.
        rtol: relative eigenvalue cut-off.

    Returns:
        ``Eigenpairs`` with at most k pairs (fewer if directions were dropped; see
        ``info['dropped']``), ``solver='nystrom'``, residuals NaN (K is not available)
        and ``info['approximation']`` describing the approximation.
    """
    K_nm = np.asarray(K_nm, dtype=np.float64)
    idx = np.asarray(landmark_idx)
    if K_nm.ndim != 2:
        raise ValueError(f"K_nm must have shape (N, m); got {K_nm.shape}.")
    n, m = K_nm.shape
    if idx.shape != (m,) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"landmark_idx must be {m} integer indices; got shape {idx.shape}.")
    if np.unique(idx).size != m or idx.min(initial=0) < 0 or idx.max(initial=0) >= n:
        raise ValueError(f"landmark_idx must hold {m} distinct indices in [0, {n}).")
    if not isinstance(k, int | np.integer) or not 1 <= k <= m:
        raise ValueError(f"k must satisfy 1 <= k <= m = {m} landmarks; got {k!r}.")
    if not np.all(np.isfinite(K_nm)):
        raise ValueError("K_nm contains NaN or Inf; recompute the kernel columns.")
    K_mm = K_nm[idx]
    lam, U = np.linalg.eigh(0.5 * (K_mm + K_mm.T))
    lam, U = lam[::-1], U[:, ::-1]
    keep = lam > rtol * max(lam[0], 0.0)
    kept = int(min(k, keep.sum()))
    if kept == 0:
        raise ValueError("K_mm has no eigenvalue above rtol·λ_1; the landmark kernel is zero.")
    lam, U = lam[:kept], U[:, :kept]
    vals = (n / m) * lam
    vecs = np.sqrt(m / n) * (K_nm @ U) / lam
    vecs = apply_sign_convention(np.ascontiguousarray(vecs.T))
    info = {
        "approximation": (
            f"Nyström with m={m} of N={n} landmarks; eigenvalues scaled by N/m, vectors "
            "extended by K_nm u / λ: not exactly orthonormal; individual vectors beyond the "
            "first few are unreliable when m << N (docs/methods.md §3.1)."
        ),
        "landmarks": m,
        "dropped": int(min(k, m) - kept),
        "rtol": rtol,
    }
    return Eigenpairs(vals, vecs, np.full(kept, np.nan), "nystrom", info)
