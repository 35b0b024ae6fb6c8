"""Tile products and the Gram on the accelerator (docs/methods.md §3.1, §5).

On a GPU the per-block features are computed on the device; moving them to the host for
float64 BLAS products (the host path) makes the host the bottleneck. Here the products
run where the features are:

* ``"float64"``: both blocks' features are cast to float64 on the device and multiplied
  in float64, exactly what the host path does (equal to float64 round-off).
* ``"float32"``: float32 products (full precision, never TF32) over chunks of
  ``CHUNK_COLUMNS`` feature columns, each chunk's product added in float64: about
  float32 rounding of one chunk (~1e-7 relative), for devices whose float64 units are slow.

``choose_precision`` picks between them by a measured rule: float64 when a float64 matmul
runs at least 1/``FLOAT64_SLOWDOWN_LIMIT`` of the float32 speed (H100/H200-class GPUs and
CPUs), else float32. float64 device arrays only exist inside ``x64()`` blocks: JAX
truncates float64 to float32 outside them.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .features import Features

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float64", "float32")
CHUNK_COLUMNS = 1024
# float32 chunks cost the float32 products plus one float64 tile addition per chunk, so
# float64 wins unless it is clearly slower.
FLOAT64_SLOWDOWN_LIMIT = 2.5


def x64():
    """Context in which float64 device arrays and computations are allowed."""
    return jax.enable_x64(True)


def accelerator_present() -> bool:
    """Whether JAX's default backend is an accelerator (GPU/TPU) rather than the CPU."""
    return jax.default_backend() != "cpu"


def _time_matmul(dtype, size: int, repeats: int) -> float:
    with x64():
        a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
        f = jax.jit(lambda m: jnp.dot(m, m, precision=lax.Precision.HIGHEST))
        f(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=4)
def measure_precision_rule(size: int = 2048, repeats: int = 3) -> dict:
    """Times a (size × size) float64 and float32 matmul on the default device.

    Returns:
        ``{"float64_seconds", "float32_seconds", "ratio", "choice", "device"}``; the
        choice is ``"float64"`` when ratio = t64 / t32 <= ``FLOAT64_SLOWDOWN_LIMIT``.
    """
    t64 = _time_matmul(jnp.float64, size, repeats)
    t32 = _time_matmul(jnp.float32, size, repeats)
    ratio = t64 / max(t32, 1e-12)
    choice = "float64" if ratio <= FLOAT64_SLOWDOWN_LIMIT else "float32"
    out = {
        "float64_seconds": t64,
        "float32_seconds": t32,
        "ratio": ratio,
        "limit": FLOAT64_SLOWDOWN_LIMIT,
        "matmul_size": size,
        "choice": choice,
        "device": str(jax.local_devices()[0].device_kind),
    }
    log.info("Device product precision rule: %s", out)
    return out


def choose_precision(precision: str, size: int = 2048) -> tuple[str, dict | None]:
    """(precision, measurement) for ``"auto"``, ``"float64"`` or ``"float32"``.

    ``size``: side of the square matmuls timed by the rule (``measure_precision_rule``).
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"device precision must be one of {', '.join(PRECISIONS)}; got {precision!r}."
        )
    if precision != "auto":
        return precision, None
    rule = measure_precision_rule(size)
    return rule["choice"], rule


def _dot_t(a, b):
    return jnp.dot(a, b.T, precision=lax.Precision.HIGHEST)


def _chunked_dot_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """a bᵀ in float64 from float32 chunks of ``CHUNK_COLUMNS`` columns."""
    cols = a.shape[1]
    if cols <= CHUNK_COLUMNS:
        return _dot_t(a.astype(jnp.float32), b.astype(jnp.float32)).astype(jnp.float64)
    n_chunks = -(-cols // CHUNK_COLUMNS)
    pad = n_chunks * CHUNK_COLUMNS - cols

    def chunks(m):
        m = jnp.pad(m.astype(jnp.float32), ((0, 0), (0, pad)))
        return m.reshape(m.shape[0], n_chunks, CHUNK_COLUMNS).transpose(1, 0, 2)

    def step(acc, ab):
        return acc + _dot_t(*ab).astype(jnp.float64), None

    acc0 = jnp.zeros((a.shape[0], b.shape[0]), jnp.float64)
    return lax.scan(step, acc0, (chunks(a), chunks(b)))[0]


@functools.partial(jax.jit, static_argnames=("precision",))
def _tile(fi: Features, fj: Features, precision: str) -> jax.Array:
    if precision == "float64":

        def prod(a, b):
            return _dot_t(a.astype(jnp.float64), b.astype(jnp.float64))
    else:
        prod = _chunked_dot_t
    tile = sum(prod(ri, rj) for ri, rj in zip(fi.rows, fj.rows, strict=True))
    for xi, xj, di, dj in zip(fi.x_factors, fj.x_factors, fi.d_factors, fj.d_factors, strict=True):
        tile = tile + prod(xi, xj) * prod(di, dj)
    return tile


def tile_product(fi: Features, fj: Features, precision: str) -> jax.Array:
    """Gram tile R_i R_jᵀ + Σ_l (X̃_l,i X̃_l,jᵀ) ⊙ (Δ_l,i Δ_l,jᵀ), float64, on the device.

    Args:
        fi, fj: features of row block i (b_i rows) and column block j (b_j rows), device
            arrays (float32 or float64).
        precision: ``"float64"`` or ``"float32"`` (module docstring).

    Returns:
        (b_i, b_j) float64 device array. Use it inside ``x64()``.
    """
    with x64():
        return _tile(fi, fj, precision)


@functools.partial(jax.jit, donate_argnums=0)
def _write(gram, tile, r0, c0):
    return lax.dynamic_update_slice(gram, tile.astype(gram.dtype), (r0, c0))


class DeviceGram:
    """An (n, n) Gram assembled on the device, tile by tile (upper tiles mirrored)."""

    def __init__(self, n: int, dtype: Any = np.float64, device: Any = None):
        self.n = int(n)
        with x64():
            self.array = jax.device_put(jnp.zeros((self.n, self.n), dtype), device)

    def put(self, rows: slice, cols: slice, tile: Any) -> None:
        """Writes ``tile`` at K[rows, cols] and its transpose at K[cols, rows]."""
        with x64():
            tile = jnp.asarray(tile)
            self.array = _write(self.array, tile, rows.start, cols.start)
            if rows != cols:
                self.array = _write(self.array, tile.T, cols.start, rows.start)


def to_device(features: Features, device: Any = None) -> Features:
    """Features placed on one device (gathered from a mesh if they were sharded)."""
    return jax.device_put(features, device or jax.local_devices()[0])


def all_finite(tile: Any) -> bool:
    with x64():
        return bool(jnp.all(jnp.isfinite(tile)))
