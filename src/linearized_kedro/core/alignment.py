"""Kernel alignment of the trained network with the initial NTK eigenvectors (SPEC §3.2 step 5).

For unit eigenvectors u_j of the initial Gram (over all N = N_train + N_test samples) and
the Jacobian J_end of the trained network (BN in inference mode with the end state),

    a_all(j)   = ‖J_end(X)ᵀ u_j‖² / ‖u_j‖²  = u_jᵀ Θ_end u_j / u_jᵀ u_j,
    a_train(j) = the same with only the train rows of X and u_j,
    a_test(j)  = likewise with the test rows,

and the same divided by trace(Θ_end) / N ("_normalized"). At θ_end = θ0, a_all(j) = λ_j.

Unlike the original (SPEC §4 items 9, 14), every sample contributes (the last data batch is
zero-padded with zero cotangents) and only ``chunk`` eigenvectors' accumulators
(chunk × P) are kept at a time: each data batch's VJP is reused for a chunk of cotangents.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .layers import with_conv_autodiff
from .models import count_params

DEFAULT_MEMORY_BYTES = 256 * 2**20


def _scalar_fn(module: nn.Module, state: Mapping[str, Any]):
    def f(params, x):
        return module.apply({"params": params, **state}, x, train=False)[:, 0]

    return f


def _batched(x: np.ndarray, batch: int) -> np.ndarray:
    """(n, ...) -> (ceil(n / batch), batch, ...) zero-padded."""
    nb = -(-x.shape[0] // batch)
    pad = np.zeros((nb * batch - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad]).reshape(nb, batch, *x.shape[1:])


@functools.lru_cache(maxsize=16)
def _projection_fn(module: nn.Module):
    """jit(params, state, xb (nb, b, ...), ub (nb, c, b)) -> ‖Σ_n u[:, n] ∇f(x_n)‖² (c,)."""

    def run(params, state, xb, ub):
        f = _scalar_fn(module, state)
        acc0 = jax.tree_util.tree_map(lambda p: jnp.zeros((ub.shape[1], *p.shape), p.dtype), params)

        def body(acc, inputs):
            x, u = inputs
            _, vjp = jax.vjp(lambda p: f(p, x), params)
            contrib = jax.vmap(lambda cot: vjp(cot.astype(x.dtype))[0])(u)
            return jax.tree_util.tree_map(jnp.add, acc, contrib), None

        acc, _ = jax.lax.scan(body, acc0, (xb, ub))
        return acc

    return jax.jit(run)


@functools.lru_cache(maxsize=16)
def _grad_sq_norm_fn(module: nn.Module):
    """jit(params, state, xb (nb, b, ...), mask (nb, b)) -> Σ_n mask_n ‖∇f(x_n)‖²."""

    def run(params, state, xb, mask):
        f = _scalar_fn(module, state)

        def per_sample(x):
            g = jax.grad(lambda p: f(p, x[None])[0])(params)
            return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(g))

        def body(total, inputs):
            x, m = inputs
            return total + jnp.sum(jax.vmap(per_sample)(x) * m), None

        total, _ = jax.lax.scan(body, jnp.zeros((), xb.dtype), (xb, mask))
        return total

    return jax.jit(run)


def _sq_norms(tree: Any) -> jax.Array:
    return sum(
        jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1)
        for leaf in jax.tree_util.tree_leaves(tree)
    )


def kernel_alignment(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: np.ndarray,
    eigvecs: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    chunk: int | None = None,
    batch_size: int = 128,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> dict[str, np.ndarray]:
    """Alignment of Θ_end (the NTK at ``variables``) with the eigenvectors ``eigvecs``.

    Args:
        module: a module from ``models.build_model``.
        variables: the trained ``{'params': θ_end, ['batch_stats': ...]}`` (BN in inference
            mode with these statistics, SPEC §1.3).
        x: (N, H, W, C), the samples the eigenvectors live on (train + test).
        eigvecs: (k, N) eigenvectors of the initial Gram.
        train_idx: (N_train,) row indices of the train samples in ``x``.
        test_idx: (N_test,) row indices of the test samples.
        chunk: eigenvectors per VJP batch; default from ``memory_bytes`` (2·chunk·P floats).
        batch_size: data rows per VJP (the remainder is zero-padded, never dropped).
        memory_bytes: accumulator budget used when ``chunk`` is None.

    Returns:
        ``all``, ``train``, ``test`` and their ``*_normalized`` versions, each (k,) float64,
        and ``trace`` (0-d float64) = trace Θ_end = Σ_n ‖∇f(x_n)‖².
    """
    x = np.asarray(x)
    eigvecs = np.asarray(eigvecs)
    if x.ndim != 4:
        raise ValueError(f"x must be (N, H, W, C); got shape {x.shape}.")
    n = x.shape[0]
    if eigvecs.ndim != 2 or eigvecs.shape[1] != n:
        raise ValueError(f"eigvecs must be (k, N={n}); got shape {eigvecs.shape}.")
    train_idx = np.asarray(train_idx, np.int64).reshape(-1)
    test_idx = np.asarray(test_idx, np.int64).reshape(-1)
    for name, idx in (("train_idx", train_idx), ("test_idx", test_idx)):
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"{name} must be non-empty indices into the {n} rows of x.")
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    k = eigvecs.shape[0]
    if chunk is None:
        per_vec = 2 * count_params(params) * 4
        chunk = int(max(1, min(k, memory_bytes // max(per_vec, 1))))
    if int(chunk) < 1 or int(batch_size) < 1:
        raise ValueError("chunk and batch_size must be >= 1.")
    chunk = min(int(chunk), k)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    x = x.astype(dtype)
    u = eigvecs.astype(dtype)
    disjoint_cover = (
        np.intersect1d(train_idx, test_idx).size == 0
        and np.union1d(train_idx, test_idx).size == n
        and train_idx.size + test_idx.size == n
    )
    # Hand-written reverse-mode convolutions: fast inside the scans below (layers.py).
    module = with_conv_autodiff(module, "vjp")
    project = _projection_fn(module)
    parts = {"train": train_idx, "test": test_idx}
    if not disjoint_cover:
        parts["all"] = np.arange(n)
    xbs = {name: _batched(x[idx], batch_size) for name, idx in parts.items()}
    sq = {name: [] for name in ("all", "train", "test")}
    for start in range(0, k, chunk):
        uc = u[start : start + chunk]
        c = uc.shape[0]
        # The last chunk is padded with zero vectors (zero cotangents, sliced off
        # below) so that every chunk reuses one compiled program.
        uc = np.concatenate([uc, np.zeros((chunk - c, n), uc.dtype)])
        accs = {}
        for name, idx in parts.items():
            ub = _batched(uc[:, idx].T, batch_size)  # (nb, b, c)
            accs[name] = project(params, state, xbs[name], jnp.swapaxes(ub, 1, 2))
        if disjoint_cover:
            accs["all"] = jax.tree_util.tree_map(jnp.add, accs["train"], accs["test"])
        for name in sq:
            sq[name].append(np.asarray(_sq_norms(accs[name]), np.float64)[:c])
    mask = _batched(np.ones(n, dtype), batch_size)
    trace = float(_grad_sq_norm_fn(module)(params, state, _batched(x, batch_size), mask))
    u64 = eigvecs.astype(np.float64)
    denoms = {
        "all": np.sum(u64**2, axis=1),
        "train": np.sum(u64[:, train_idx] ** 2, axis=1),
        "test": np.sum(u64[:, test_idx] ** 2, axis=1),
    }
    out: dict[str, np.ndarray] = {}
    for name in ("all", "train", "test"):
        out[name] = np.concatenate(sq[name]) / denoms[name]
    for name in ("all", "train", "test"):
        out[f"{name}_normalized"] = out[name] / (trace / n)
    out["trace"] = np.asarray(trace, np.float64)
    return out
