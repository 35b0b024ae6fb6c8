"""Neural anisotropy directions (NADs) through the mixed derivative of the network (docs/methods.md §3.3).

For a single-output network f(θ, x) and evaluation points x_1..x_B, define

    F(θ, δ) = (1/B) Σ_b f(θ, x_b + δ),    δ ∈ ℝ^D,  D = H·W·C,

and the mixed-derivative operator A = ∂²F/∂θ∂δ at δ = 0, a P × D matrix. It is the
average of the per-point mixed derivatives (docs/methods.md §3.3 step 3: the SVD of the *averaged*
operator, not an average of per-point Gram matrices):

    A v  = ∇_θ ⟨∇_δ F(θ, δ), v⟩      (forward over reverse: JVP in δ of ∇_θ F)
    Aᵀu  = ∇_δ ⟨∇_θ F(θ, δ), u⟩      (reverse over forward: grad in δ of a JVP in θ)

The NADs are the right singular vectors of A, i.e. the eigenvectors of the D × D matrix
G = AᵀA, and the eigenvalues of G are the squared singular values. Unlike the original's
ARPACK ``svds(k=D-1)`` (docs/methods.md §4 item 11), all D of them are computed with a dense float64
symmetric eigensolver, in descending order, with a deterministic sign convention.

The separable NAD dataset of docs/methods.md §3.4 is generated here as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .spectrum import apply_sign_convention

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET_BYTES = 2**30
"""Largest dense A (P·D float32 entries) built by default: 1 GiB (LeNet 32×32×1: 0.56 GB)."""

ZERO_RTOL = 1e-12
"""Eigenvalues ≤ ZERO_RTOL · λ_max count as numerically zero. A is float32, so singular
values carry an absolute error of ~1e-7·σ_max; their squares sit near 1e-14·λ_max."""

# Activations whose derivative vanishes at 0 (JAX defines relu'(0) = 0). With zero
# biases every pre-activation at x = 0 is 0, so A ≡ 0 (docs/methods.md §2.3, §4 item 11).
ZERO_DERIVATIVE_AT_ORIGIN = ("relu",)


@dataclass(frozen=True)
class NADResult:
    """All NADs of one operator.

    Attributes:
        nads: (D, D) float64; row i is the i-th NAD (unit norm, flattened in H-W-C order).
        eigenvalues: (D,) float64, descending; eigenvalues of AᵀA = squared singular values
            of A (tiny negative round-off values are kept as computed).
        residuals: (D,) float64; ‖G u_i − λ_i u_i‖₂ with G the float64 AᵀA.
        num_zero: eigenvalues ≤ ``zero_rtol`` · λ_max.
        zero_rtol: the relative threshold used for ``num_zero``.
        method: "dense" (A materialised, G = AᵀA in float64) or "matrix_free"
            (G column blocks from JVP/VJP products at the working precision).
        num_params: P.
        input_dim: D.
        timings: seconds per stage ("operator", "gram", "eigh", "residuals").
    """

    nads: np.ndarray
    eigenvalues: np.ndarray
    residuals: np.ndarray
    num_zero: int
    zero_rtol: float
    method: str
    num_params: int
    input_dim: int
    timings: dict[str, float] = field(default_factory=dict)


def check_nad_activation(activation: str, sigma: float) -> None:
    """Refuses a configuration whose mixed derivative is identically zero.

    Args:
        activation: the model's activation name.
        sigma: std of the evaluation points (0 → x = 0).

    Raises:
        ValueError: for ReLU-like activations evaluated at x = 0.
    """
    if float(sigma) < 0:
        raise ValueError(f"nads.sigma must be >= 0; got {sigma}.")
    if str(activation).lower() in ZERO_DERIVATIVE_AT_ORIGIN and float(sigma) == 0.0:
        raise ValueError(
            f"NADs of a {activation!r} network at x = 0 are undefined: the biases start at 0, "
            f"so every pre-activation is 0 and {activation}'(0) = 0 makes the mixed derivative "
            "∂²f/∂θ∂x identically zero (docs/methods.md §2.3). Use nads.activation=gelu (the paper's "
            "choice) or random evaluation points with nads.sigma > 0."
        )


def nad_points(
    input_shape: Sequence[int], sigma: float, num_points: int, key: jax.Array
) -> jax.Array:
    """Evaluation points of the operator (docs/methods.md §3.3 step 2).

    Args:
        input_shape: (H, W, C).
        sigma: std of the Gaussian points; 0 gives the single point x = 0.
        num_points: B, number of points when ``sigma > 0``.
        key: PRNG key (derive it from the configured seed; docs/methods.md §4 item 11).

    Returns:
        (B, H, W, C) float32 points; (1, H, W, C) zeros when ``sigma == 0``, since B equal
        points give the same averaged operator.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C) with positive sizes; got {shape}.")
    if float(sigma) < 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}.")
    if int(num_points) < 1:
        raise ValueError(f"num_points must be >= 1; got {num_points}.")
    if float(sigma) == 0.0:
        return jnp.zeros((1, *shape), jnp.float32)
    return float(sigma) * jax.random.normal(key, (int(num_points), *shape), jnp.float32)


def mixed_derivative_operator(
    f: Callable[[Any, jax.Array], jax.Array], params: Any, points: jax.Array
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array], int, int]:
    """The operator A = ∂²F/∂θ∂δ and its adjoint as jitted mat-vecs.

    Args:
        f: f(params, x (B, H, W, C)) -> (B,) (e.g. ``models.scalar_apply``).
        params: θ (pytree).
        points: (B, H, W, C) evaluation points.

    Returns:
        ``(matvec, rmatvec, P, D)``: ``matvec(v (D,)) -> (P,)`` is A v, with θ flattened
        by ``ravel_pytree``; ``rmatvec(u (P,)) -> (D,)`` is Aᵀu. Both accept a leading
        batch axis through ``jax.vmap``.
    """
    points = jnp.asarray(points)
    if points.ndim != 4:
        raise ValueError(f"points must have shape (B, H, W, C); got {points.shape}.")
    flat, unravel = ravel_pytree(params)
    input_shape = points.shape[1:]
    dim = int(np.prod(input_shape))
    dtype = flat.dtype
    # Work at the parameters' precision: float32 points would round δ in float64 runs.
    points = points.astype(dtype)

    def averaged(theta_flat: jax.Array, delta: jax.Array) -> jax.Array:
        # The same δ shifts every point: A is the averaged operator of docs/methods.md §3.3.
        shift = delta.reshape(input_shape)
        return jnp.mean(f(unravel(theta_flat), points + shift[None]))

    zero = jnp.zeros((dim,), dtype)

    @jax.jit
    def matvec(v: jax.Array) -> jax.Array:
        grad_theta = jax.grad(averaged, argnums=0)
        return jax.jvp(lambda d: grad_theta(flat, d), (zero,), (v.astype(dtype),))[1]

    @jax.jit
    def rmatvec(u: jax.Array) -> jax.Array:
        def directional(delta: jax.Array) -> jax.Array:
            return jax.jvp(lambda t: averaged(t, delta), (flat,), (u.astype(dtype),))[1]

        return jax.grad(directional)(zero)

    return matvec, rmatvec, int(flat.size), dim


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _unit_vectors(dim: int, lo: int, hi: int, dtype: Any) -> jax.Array:
    """Rows lo..hi-1 of the (dim, dim) identity, (hi - lo, dim); rows past dim are zero,
    so every block has the same shape and the vmapped products compile once."""
    return jax.nn.one_hot(jnp.arange(lo, hi), dim, dtype=dtype)


def nad_gram(
    f: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    points: jax.Array,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    chunk_size: int | None = None,
    method: str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, str, dict[str, float]]:
    """G = AᵀA (D × D, float64) of the mixed-derivative operator.

    ``dense``: A is built column block by column block (A e_d for ``chunk_size`` unit
    vectors at a time, vmapped) into a host float32 (P, D) array, then G is accumulated in
    float64 over row blocks of A, so G has full float64 accuracy for the float32 A.
    ``matrix_free``: each column block of G is Aᵀ(A V) from vmapped mat-vecs at the working
    precision (float32 unless x64 is on), never holding A; then G is symmetrised. ``auto``
    picks dense when P·D·4 bytes ≤ ``memory_budget_bytes``.

    Args:
        f: f(params, x (B, H, W, C)) -> (B,).
        params: θ (pytree).
        points: (B, H, W, C).
        memory_budget_bytes: bound on the dense A and on one block of intermediates.
        chunk_size: input directions per vmapped block; default from the budget (≤ 128).
        method: "auto", "dense" or "matrix_free".
        progress: show a tqdm bar over the blocks.

    Returns:
        ``(G (D, D) float64, method used, timings {"operator", "gram"} in seconds)``.
    """
    import scipy.linalg.blas
    from tqdm.auto import tqdm

    if method not in ("auto", "dense", "matrix_free"):
        raise ValueError(f"method must be 'auto', 'dense' or 'matrix_free'; got {method!r}.")
    matvec, rmatvec, num_params, dim = mixed_derivative_operator(f, params, points)
    dense_bytes = num_params * dim * 4
    if method == "auto":
        method = "dense" if dense_bytes <= int(memory_budget_bytes) else "matrix_free"
    if chunk_size is None:
        # One block holds chunk·P outputs plus per-point activations; stay well inside.
        per_direction = max(num_params * 4 * 4, 1)
        chunk_size = int(max(1, min(128, dim, int(memory_budget_bytes) // 4 // per_direction)))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    chunk_size = min(chunk_size, dim)
    blocks = _chunks(dim, chunk_size)
    dtype = ravel_pytree(params)[0].dtype
    batched_matvec = jax.jit(jax.vmap(matvec))
    batched_rmatvec = jax.jit(jax.vmap(rmatvec))
    timings: dict[str, float] = {}
    logger.info(
        "NAD Gram: P=%d, D=%d, method=%s, %d blocks of <= %d directions",
        num_params,
        dim,
        method,
        len(blocks),
        chunk_size,
    )
    start = time.perf_counter()
    if method == "dense":
        a_host = np.empty((num_params, dim), np.float32 if dtype == jnp.float32 else np.float64)
        for lo, hi in tqdm(blocks, desc="A columns", disable=not progress):
            eye = _unit_vectors(dim, lo, lo + chunk_size, dtype)
            a_host[:, lo:hi] = np.asarray(batched_matvec(eye))[: hi - lo].T
        timings["operator"] = time.perf_counter() - start
        start = time.perf_counter()
        upper = np.zeros((dim, dim), np.float64, order="F")
        rows = max(1, int(memory_budget_bytes) // (8 * dim * 4))
        for lo, hi in _chunks(num_params, rows):
            block = a_host[lo:hi].astype(np.float64)
            # BLAS syrk: only the upper triangle of blockᵀ·block, half the FLOPs of a GEMM.
            upper = scipy.linalg.blas.dsyrk(1.0, block.T, beta=1.0, c=upper, overwrite_c=1)
        gram = np.triu(upper) + np.triu(upper, 1).T
        timings["gram"] = time.perf_counter() - start
    else:
        gram = np.empty((dim, dim), np.float64)
        for lo, hi in tqdm(blocks, desc="AᵀA columns", disable=not progress):
            eye = _unit_vectors(dim, lo, lo + chunk_size, dtype)
            block = batched_rmatvec(batched_matvec(eye))
            gram[:, lo:hi] = np.asarray(block, np.float64)[: hi - lo].T
        # Round-off makes the float32 products slightly asymmetric; eigh needs symmetry.
        gram = 0.5 * (gram + gram.T)
        timings["operator"] = time.perf_counter() - start
        timings["gram"] = 0.0
    return gram, method, timings


def nads_from_gram(
    gram: np.ndarray, zero_rtol: float = ZERO_RTOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """All eigenpairs of G = AᵀA, descending, with the sign convention and residuals.

    Args:
        gram: (D, D) symmetric positive semi-definite matrix.
        zero_rtol: eigenvalues ≤ zero_rtol·λ_max are counted as numerically zero.

    Returns:
        ``(nads (D, D) rows, eigenvalues (D,), residuals (D,), num_zero)``, float64.

    Raises:
        ValueError: if G is not square, not finite, or identically zero (A ≡ 0).
    """
    import scipy.linalg

    gram = np.asarray(gram, np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"AᵀA must be a square (D, D) matrix; got shape {gram.shape}.")
    if not np.all(np.isfinite(gram)):
        raise ValueError("AᵀA has non-finite entries; check the model and evaluation points.")
    if not np.any(gram):
        raise ValueError(
            "The mixed derivative ∂²f/∂θ∂x is identically zero at these evaluation points "
            "(AᵀA == 0), so the NADs are undefined. This happens e.g. for ReLU at x = 0 with "
            "zero biases (relu'(0) = 0). Use nads.activation=gelu or nads.sigma > 0."
        )
    values, vectors = scipy.linalg.eigh(gram, driver="evr")
    order = np.argsort(values)[::-1]
    values = values[order]
    # The NTK eigenvectors' convention (largest-|entry| positive, ties to the first index).
    # G is checked finite above, so no row is NaN; an all-zero row cannot come out of eigh.
    nads = apply_sign_convention(np.ascontiguousarray(vectors[:, order].T))
    residuals = np.linalg.norm(nads @ gram - values[:, None] * nads, axis=1)
    num_zero = int(np.sum(values <= float(zero_rtol) * values[0]))
    return nads, values, residuals, num_zero


def compute_nads(
    f: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    points: jax.Array,
    *,
    zero_rtol: float = ZERO_RTOL,
    **gram_options: Any,
) -> NADResult:
    """All D NADs of f at θ, averaged over the points (docs/methods.md §3.3).

    Args:
        f: f(params, x (B, H, W, C)) -> (B,), e.g. ``models.scalar_apply(module, state)``.
        params: θ0 (pytree).
        points: (B, H, W, C) evaluation points (``nad_points``).
        zero_rtol: see ``nads_from_gram``.
        **gram_options: ``memory_budget_bytes``, ``chunk_size``, ``method``,
            ``progress``: see ``nad_gram``.

    Returns:
        A ``NADResult`` with (D, D) NADs, (D,) eigenvalues, residuals and timings.
    """
    gram, used, timings = nad_gram(f, params, points, **gram_options)
    start = time.perf_counter()
    nads, values, residuals, num_zero = nads_from_gram(gram, zero_rtol)
    timings["eigh"] = time.perf_counter() - start
    dim = gram.shape[0]
    logger.info(
        "NADs: λ_0=%.3e, λ_%d=%.3e, %d numerically zero, max residual %.2e",
        values[0],
        dim - 1,
        values[-1],
        num_zero,
        float(residuals.max()),
    )
    return NADResult(
        nads=nads,
        eigenvalues=values,
        residuals=residuals,
        num_zero=num_zero,
        zero_rtol=float(zero_rtol),
        method=used,
        num_params=int(ravel_pytree(params)[0].size),
        input_dim=dim,
        timings=timings,
    )


def nads_as_images(nads: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """Reshapes (K, D) NAD rows into (K, H, W, C) images (H-W-C flattening order).

    Raises:
        ValueError: if D != H·W·C.
    """
    shape = tuple(int(s) for s in input_shape)
    nads = np.asarray(nads)
    if nads.ndim != 2 or nads.shape[1] != int(np.prod(shape)):
        raise ValueError(
            f"NADs of shape {nads.shape} cannot be reshaped to images of shape {shape}: "
            f"need (K, {int(np.prod(shape))})."
        )
    return nads.reshape((nads.shape[0], *shape))


def nad_task_keys(seed: int, label_idx: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Keys of one NAD training task (docs/methods.md §1.7).

    (train_key, data_key) = split(key(seed)); the data key is then made distinct per NAD
    index with ``fold_in(data_key, label_idx)`` and split into (noise_key, label_key).

    Returns:
        ``(train_key, noise_key, label_key)``.
    """
    train_key, data_key = jax.random.split(jax.random.key(int(seed)))
    noise_key, label_key = jax.random.split(jax.random.fold_in(data_key, int(label_idx)))
    return train_key, noise_key, label_key


def nad_separable_dataset(
    direction: np.ndarray,
    *,
    input_shape: Sequence[int] | None = None,
    epsilon: float,
    sigma: float,
    num_train: int,
    num_test: int,
    noise_key: jax.Array,
    label_key: jax.Array,
) -> dict[str, np.ndarray]:
    """Linearly separable data along one NAD (docs/methods.md §3.4).

    w ~ σ·N(0, I_D) projected onto u^⊥, ℓ ~ Bernoulli(0.5), y = 2ℓ − 1,
    x = (ε/2)·y·u + w. The first ``num_train`` samples are the train split. Not normalised.
    The projection is done in float64 so that ⟨x, u⟩ = ±ε/2 to float32 round-off.

    Args:
        direction: u, shape (H, W, C), or (D,) together with ``input_shape``; it is
            renormalised to unit norm (it must be non-zero).
        input_shape: (H, W, C) of the images when ``direction`` is flat.
        epsilon: margin ε > 0 between the two classes along u.
        sigma: noise std σ ≥ 0.
        num_train, num_test: sample counts (≥ 1).
        noise_key, label_key: from ``nad_task_keys``.

    Returns:
        ``{"train_x" (N_tr, H, W, C) float32, "train_y" (N_tr,) float32 in {0, 1},
        "test_x", "test_y"}``.
    """
    u = np.asarray(direction, np.float64)
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if u.size != int(np.prod(shape)):
            raise ValueError(
                f"The NAD has {u.size} entries but input_shape {shape} needs "
                f"{int(np.prod(shape))}; the NADs were computed for another input shape."
            )
        u = u.reshape(shape)
    if u.ndim != 3:
        raise ValueError(
            f"direction must be (H, W, C), or (D,) with input_shape; got shape {u.shape}."
        )
    norm = float(np.linalg.norm(u))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("The NAD direction is zero or not finite; cannot build the dataset.")
    if float(epsilon) <= 0:
        raise ValueError(f"epsilon (the class margin) must be > 0; got {epsilon}.")
    if float(sigma) < 0:
        raise ValueError(f"sigma (the noise std) must be >= 0; got {sigma}.")
    if int(num_train) < 1 or int(num_test) < 1:
        raise ValueError(f"num_train and num_test must be >= 1; got {num_train} and {num_test}.")
    shape = u.shape
    u = (u / norm).reshape(-1)
    total = int(num_train) + int(num_test)
    noise = np.asarray(jax.random.normal(noise_key, (total, u.size), jnp.float32), np.float64)
    noise = float(sigma) * noise
    noise -= np.outer(noise @ u, u)
    labels = np.asarray(jax.random.bernoulli(label_key, 0.5, (total,)), np.float64)
    signs = 2.0 * labels - 1.0
    x = (0.5 * float(epsilon) * signs)[:, None] * u[None, :] + noise
    x = x.reshape((total, *shape)).astype(np.float32)
    labels = labels.astype(np.float32)
    n = int(num_train)
    return {"train_x": x[:n], "train_y": labels[:n], "test_x": x[n:], "test_y": labels[n:]}


def fourier_magnitudes(images: np.ndarray) -> np.ndarray:
    """|FFT2| of each channel, zero frequency shifted to the centre.

    Args:
        images: (K, H, W, C).

    Returns:
        (K, H, W, C) float64 magnitudes.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (K, H, W, C); got shape {images.shape}.")
    return np.abs(np.fft.fftshift(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2)))


def nad_summary(result: NADResult) -> Mapping[str, Any]:
    """JSON-friendly numbers of a ``NADResult`` for reports."""
    values = result.eigenvalues
    picks = [i for i in (0, 1, 10, 100, 1000) if i < values.size]
    return {
        "num_params": result.num_params,
        "input_dim": result.input_dim,
        "method": result.method,
        "num_zero_eigenvalues": int(result.num_zero),
        "zero_rtol": float(result.zero_rtol),
        "eigenvalues_at": {str(i): float(values[i]) for i in picks},
        "eigenvalue_min": float(values[-1]),
        "max_residual": float(result.residuals.max()),
        "max_relative_residual": float(result.residuals.max() / max(abs(values[0]), 1e-300)),
        "timings_s": {k: float(v) for k, v in result.timings.items()},
    }
