"""How the Gram is tiled: block size, cached blocks, bytes and FLOPs (docs/methods.md §3.1, §5).

Samples are split into ``n_blocks = ceil(N / b)`` consecutive blocks of ``block_size`` b
(the last one may be shorter). Tile (i, j), i <= j, is K[i*b:(i+1)*b, j*b:(j+1)*b]. The
plan is a plain dict so that it can be stored in the spectrum report as it is.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import flax.linen as nn
import numpy as np

from .structure import LeafKey, Structure, layout

DEFAULT_MEMORY_BUDGET = 4 * 2**30
PRODUCTS = ("host", "device")
HOST_PRECISIONS = ("auto", "float64", "float32")


# ``"auto"`` takes float32 host products up to this many eigenpairs (see below).
AUTO_FLOAT32_MAX_K = 200


def resolve_host_precision(precision: str, dtype: Any = np.float64, k: int | None = None) -> str:
    """The precision of host tile products: ``"float64"`` or ``"float32"``.

    ``"float64"`` casts the float32 features to float64, so every product is exact up to
    float64 round-off. ``"float32"`` keeps the features in float32 and adds float32 GEMMs
    over chunks of ≤ 1024 columns in float64 (docs/methods.md §3.1, "Product precision"):
    ~1e-7 relative per Gram entry, on the order of the rounding the float32 features carry
    anyway, for about half the time of float64 GEMMs on a CPU. Its effect on λ_j grows
    with λ₀/λ_j: measured at N = 4000, k = 100, within 1e-7 of float64 products where the
    top 100 span 1.5·10³ (LeNet), whereas at k = 1000 the spectrum spans ~10⁶ and the
    tail would come close to the 1e-4 target. So ``"auto"`` is ``"float32"`` for
    k ≤ ``AUTO_FLOAT32_MAX_K`` (or k unknown) and ``"float64"`` beyond. A float32 Gram
    (``dtype``) always uses float32 products.
    """
    if precision not in HOST_PRECISIONS:
        raise ValueError(
            f"host precision must be one of {', '.join(HOST_PRECISIONS)}; got {precision!r}."
        )
    if np.dtype(dtype) == np.float32:
        return "float32"
    if precision == "auto":
        return "float32" if k is None or int(k) <= AUTO_FLOAT32_MAX_K else "float64"
    return precision


def _bytes(b: int, fdim: int, itemsize: int, factorised: bool, products: str) -> tuple[int, int]:
    """(bytes of one cached feature block, bytes of the tile temporaries) for b rows."""
    block_bytes = b * fdim * itemsize
    # Tile temporaries: the tile itself plus one X̃X̃ᵀ and one ΔΔᵀ product at a time, and
    # the float32 block coming out of JAX before the cast (host) or the float64 copies of
    # both blocks' features (device).
    extra = b * fdim * 4 if products == "host" else 2 * b * fdim * 8
    return block_bytes, b * b * 8 * (3 if factorised else 1) + extra


def default_block_size(
    n: int,
    feature_dim: int,
    itemsize: int,
    budget: int,
    products: str = "host",
    factorised: bool = True,
) -> int:
    """Rows per tile: large enough for efficient matmuls, small enough for the budget.

    Host: tiles of ~500-1000 rows keep the BLAS products efficient while the upper triangle
    saves ~40 % of the products. Device: 2048-row tiles keep an accelerator busy. Halved
    until one row block, one column block and the tile temporaries fit the budget.
    """
    if products == "device":
        b = min(n, 2048)
    else:
        b = min(n, 1000 if n > 2000 else max(1, math.ceil(n / 2)) if n > 500 else n)
    while b > 1:
        block_bytes, tile_bytes = _bytes(b, feature_dim, itemsize, factorised, products)
        if 2 * block_bytes + tile_bytes <= budget:
            break
        b = max(1, b // 2)
    return b


def make_plan(
    structure: Structure,
    n: int,
    block_size: int | None,
    budget: int,
    dtype: Any,
    method: str,
    products: str = "host",
    precision: str | None = None,
) -> dict:
    """The tiling of an (n, n) Gram for a feature layout (see ``gram_plan``).

    ``precision``: the resolved host product precision (``resolve_host_precision``);
    ``None`` means the Gram's dtype.
    """
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {PRODUCTS}; got {products!r}.")
    # Host: features are cached in the product precision. Device: cached as computed
    # (float32) and cast per product.
    if products == "host":
        itemsize = 4 if precision == "float32" else np.dtype(dtype).itemsize
    else:
        itemsize = 4
    fdim = structure.feature_dim
    factorised = bool(structure.factor_sites)
    b = (
        default_block_size(n, fdim, itemsize, budget, products, factorised)
        if block_size is None
        else int(block_size)
    )
    if b < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size}.")
    b = min(b, n)
    n_blocks = math.ceil(n / b)
    block_bytes, tile_bytes = _bytes(b, fdim, itemsize, factorised, products)
    min_bytes = 2 * block_bytes + tile_bytes
    if budget < min_bytes:
        raise ValueError(
            f"memory_budget_bytes={budget} is too small for the Gram of N={n} with "
            f"block_size={b} and {fdim} feature columns per sample ({method} method): one "
            f"row block and one column block need at least {min_bytes} bytes "
            f"({min_bytes / 2**20:.1f} MiB). Raise the budget or lower block_size."
        )
    cache_blocks = int(min(n_blocks, max(2, (budget - tile_bytes) // max(1, block_bytes))))
    n_tiles = n_blocks * (n_blocks + 1) // 2
    # Products: every upper tile costs 2·b²·(feature columns) plus 2 elementwise passes
    # per factorised layer; features: ≈ 3 forward costs per sample (unknown here, so
    # reported as the number of feature-block evaluations).
    tile_flops = 2 * b * b * fdim + 2 * b * b * len(structure.factor_sites)
    recomputed = 0 if cache_blocks >= n_blocks else n_tiles - n_blocks
    return {
        "method": method,
        "products": products,
        "n": n,
        "block_size": b,
        "n_blocks": n_blocks,
        "n_tiles": n_tiles,
        "feature_dim": fdim,
        "n_params": structure.n_params,
        "dropped_params": structure.dropped_dim,
        "n_factorised_dense": len(structure.factor_sites),
        "n_conv_sites": len(structure.conv_sites),
        "explicit_jacobian_columns": structure.explicit_dim,
        "bytes_per_block": block_bytes,
        "cached_blocks": cache_blocks,
        "feature_block_evaluations": n_blocks + recomputed,
        "estimated_peak_bytes": int(min(cache_blocks, n_blocks) * block_bytes + tile_bytes),
        "gram_bytes": n * n * np.dtype(dtype).itemsize,
        "estimated_product_flops": int(n_tiles * tile_flops),
        "explicit_gram_flops": int(2 * n * n * structure.n_params),
    }


def gram_plan(
    module: nn.Module,
    variables: Mapping[str, Any],
    n: int,
    *,
    input_shape: tuple[int, ...] | None = None,
    method: str = "auto",
    block_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    dtype: Any = np.float64,
    products: str = "host",
    host_precision: str = "float64",
    dropped: Collection[LeafKey] = (),
) -> dict:
    """Describes how ``ntk_gram`` tiles an (n, n) Gram with these settings: sizes, bytes, FLOPs.

    ``ntk_gram`` calls this with its own arguments, so a plan made with the same ones is
    the plan that runs (same block size, hence the same resumable tile keys).

    Args:
        module, variables: as for ``ntk_gram``.
        n: number of samples N.
        input_shape: per-sample input shape (H, W, C); used to find the Dense layers that
            act on vectors. Without it every 2-D ``kernel`` is assumed to be such a layer,
            which is wrong for convolutional models: pass it.
        method, block_size, memory_budget_bytes, dtype: as for ``ntk_gram``.
        products: ``"host"`` or ``"device"``, where the tile products run (as resolved by
            ``ntk_gram``'s ``products`` argument).
        host_precision: as for ``ntk_gram`` (host products only).
        dropped: flattened keys of leaves with an identically zero per-sample gradient
            (``zero_columns.find_zero_columns``).

    Returns:
        A dict with ``method``, ``products``, ``block_size``, ``n_blocks``, ``n_tiles``,
        ``feature_dim`` (columns per sample), ``dropped_params``, ``cached_blocks``,
        ``estimated_peak_bytes``, ``estimated_product_flops`` and
        ``explicit_gram_flops`` (2·N²·P, the cost of J Jᵀ on the full square).

    Raises:
        ValueError: bad ``n``/``method``/``block_size`` or a budget below one block pair.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of samples; got {n}.")
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    resolved, structure = layout(module, variables, shape, method, dropped)
    precision = resolve_host_precision(host_precision, dtype) if products == "host" else None
    return make_plan(
        structure,
        int(n),
        block_size,
        int(memory_budget_bytes),
        dtype,
        resolved,
        products,
        precision,
    )
