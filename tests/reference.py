"""The one independent reference every numerical test compares against.

Explicit, float64, no cleverness: the Jacobian comes from ``jax.jacrev`` of the *batched*
network on the flat parameter vector (``ravel_pytree``): batched VJPs, no ``vmap`` over
samples, no interceptors, no structured products. BatchNorm runs in inference mode
(docs/methods.md §1.3). Tests never re-implement these; they import them.

Tolerances are per dtype (``TOLERANCES``), relative to the largest magnitude of the
reference (``rel_err``): a float32 pipeline that accumulates in float64 is held to 1e-5,
a float64 (x64) path to 1e-10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# Relative to max |reference|. float32: about 100 ulps of the largest entry, the error
# of float32 features summed in float64. float64: round-off of products over P ~ 1e4.
TOLERANCES = {"float32": 1e-5, "float64": 1e-10}


def tolerance(dtype: Any) -> float:
    """The relative tolerance of ``TOLERANCES`` for a dtype (name, NumPy or JAX dtype)."""
    return TOLERANCES[np.dtype(dtype).name]


def rel_err(actual: Any, reference: Any) -> float:
    """max |actual - reference| / max |reference| (0 when both are zero)."""
    actual = np.asarray(actual, np.float64)
    reference = np.asarray(reference, np.float64)
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(actual - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def explicit_jacobian(module: Any, variables: Mapping[str, Any], x: Any) -> np.ndarray:
    """float64 (N, P) Jacobian of the scalar network output w.r.t. the flat parameters.

    Args:
        module: a Flax module with ``__call__(x, train=False) -> (N, 1)``.
        variables: ``{'params': ..., [other collections]}``; other collections (BN
            statistics) are held fixed.
        x: (N, ...) inputs.

    Returns:
        J with ``J[n, p] = ∂f(θ, x_n)/∂θ_p`` in ``ravel_pytree`` order, float64.
    """
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), dict(variables))
        flat, unravel = ravel_pytree(v64["params"])
        state = {k: v for k, v in v64.items() if k != "params"}
        x64 = jnp.asarray(x, jnp.float64)

        def f(theta):
            return module.apply({"params": unravel(theta), **state}, x64, train=False)[:, 0]

        return np.asarray(jax.jacrev(f)(flat))


def explicit_gram(module: Any, variables: Mapping[str, Any], x: Any, x2: Any = None) -> np.ndarray:
    """float64 NTK Gram J(x) J(x2)ᵀ (x2 defaults to x), from ``explicit_jacobian``.

    Returns:
        (N, N2) float64.
    """
    jac = explicit_jacobian(module, variables, x)
    jac2 = jac if x2 is None else explicit_jacobian(module, variables, x2)
    return jac @ jac2.T


def random_psd(n: int, *, condition: float = 1e4, seed: int = 0) -> np.ndarray:
    """A random symmetric positive definite (n, n) float64 matrix with known condition number.

    Eigenvalues are log-spaced from 1 down to 1 / condition (distinct), eigenvectors a
    random orthogonal basis.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = np.logspace(0.0, -np.log10(condition), n)
    return (q * values) @ q.T


def known_spectrum(
    n: int = 300, *, seed: int = 0, decay: float = 0.97
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A symmetric PSD (n, n) float64 matrix with a slowly decaying, NTK-like spectrum.

    K = Q diag(λ) Qᵀ with λ_j = 1e3·decay^j + 1e-3 (a flat tail), Q a random orthogonal
    basis.

    Returns:
        (K (n, n), eigenvalues (n,) descending, eigenvectors (n, n) as rows), the
        eigenpairs from ``numpy.linalg.eigh``.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    values = 1e3 * decay ** np.arange(n) + 1e-3
    K = (q * values) @ q.T
    w, V = np.linalg.eigh(K)
    return K, w[::-1], V[:, ::-1].T


def subspace_cos(A: np.ndarray, B: np.ndarray) -> float:
    """Smallest principal cosine between the row spaces of A and B (both (k, N))."""
    return float(np.linalg.svd(A @ B.T, compute_uv=False).min())
