"""Kernel products without the full Gram: K·v and the rectangular kernel K_nm (Nyström)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from tqdm.auto import tqdm

from ..models import scalar_apply
from .features import flat_jacobian
from .plan import DEFAULT_MEMORY_BUDGET
from .structure import check_variables, check_x, leaf_dtype


def ntk_vector_product(
    module: nn.Module, variables: Mapping[str, Any], x: Any, v: Any
) -> jax.Array:
    """K @ v without forming K or J: J (Jᵀ v) with one VJP and one JVP per column.

    Meant for MLP-sized models and tests; for CNNs the Gram route is far cheaper.

    Args:
        module, variables, x: as for ``ntk_gram``; x has shape (N, ...).
        v: (N,) or (N, m).

    Returns:
        K v of shape (N,) or (N, m), in the parameters' dtype.
    """
    x = check_x(x)
    params, state = check_variables(variables)
    v = jax.numpy.asarray(v, dtype=leaf_dtype(params))
    squeeze = v.ndim == 1
    if squeeze:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != x.shape[0]:
        raise ValueError(
            f"v must have shape (N,) or (N, m) with N={x.shape[0]} rows; got {v.shape}."
        )
    apply = scalar_apply(module, state)

    def f(p):
        return apply(p, x)

    @jax.jit
    def kv(vs):
        with jax.default_matmul_precision("highest"):
            _, pullback = jax.vjp(f, params)

            def one(col):
                (jt_v,) = pullback(col)
                return jax.jvp(f, (params,), (jt_v,))[1]

            return jax.lax.map(one, vs.T).T

    out = kv(v)
    return out[:, 0] if squeeze else out


def ntk_cross_gram(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    landmarks: Any,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    dtype: Any = np.float64,
    progress: bool = False,
) -> np.ndarray:
    """The NTK between all samples and m landmarks, K_nm = J(x) J(landmarks)ᵀ.

    The landmarks' Jacobian (m, P) is held once; the samples' Jacobian rows are streamed
    in blocks that fit ``memory_budget_bytes`` next to it (docs/methods.md §3.1, Nyström path).

    Args:
        module: a Flax module with ``apply(variables, x, train=False) -> (B, 1)``.
        variables: ``{'params': θ, ['batch_stats': ...]}`` (BN in inference mode).
        x: (N, H, W, C) samples.
        landmarks: (m, H, W, C) landmark samples.
        memory_budget_bytes: bytes for the landmark Jacobian plus one row block.
        dtype: accumulation dtype of the products (float64 by default).
        progress: tqdm bar over the row blocks.

    Returns:
        (N, m) array of ``dtype``.
    """
    x = np.asarray(x)
    landmarks = np.asarray(landmarks)
    if x.shape[1:] != landmarks.shape[1:]:
        raise ValueError(
            f"Samples {x.shape[1:]} and landmarks {landmarks.shape[1:]} differ in shape."
        )
    j_m = np.asarray(flat_jacobian(module, variables, landmarks), dtype)
    n, (m, p) = x.shape[0], j_m.shape
    row_bytes = p * np.dtype(dtype).itemsize
    spare = int(memory_budget_bytes) - j_m.nbytes - n * m * np.dtype(dtype).itemsize
    if spare < 2 * row_bytes:
        raise ValueError(
            f"ntk memory budget {memory_budget_bytes / 2**30:.2f} GiB cannot hold the "
            f"landmark Jacobian ({j_m.nbytes / 2**30:.2f} GiB), K_nm and a row block; raise "
            "ntk.memory_budget_gb or use fewer landmarks."
        )
    rows = max(1, min(n, spare // (2 * row_bytes), 1024))
    out = np.empty((n, m), dtype)
    for start in tqdm(range(0, n, rows), desc="NTK K_nm", disable=not progress):
        block = np.asarray(flat_jacobian(module, variables, x[start : start + rows]), dtype)
        out[start : start + rows] = block @ j_m.T
    if not np.all(np.isfinite(out)):
        raise ValueError("K_nm contains NaN or Inf; check the inputs and θ0.")
    return out
