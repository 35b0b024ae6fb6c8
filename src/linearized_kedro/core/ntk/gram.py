"""The empirical NTK Gram K = J Jᵀ at θ0, tile by tile over the upper triangle.

The kernel is Θ(x, x') = ⟨∇θ f(θ0, x), ∇θ f(θ0, x')⟩ with the full Jacobian inner product
and a single output, so the Gram matrix is K = J Jᵀ with J the (N, P) Jacobian (docs/methods.md §1.4).
f runs BatchNorm in inference mode (docs/methods.md §1.3), which makes samples independent and the
per-sample Jacobian well defined.

Two exact ways of producing the tiles (docs/methods.md §3.1, §4 item 13):

* ``"jacobian"``: explicit per-sample Jacobian rows J_b (b, P) of each block; tile (i, j)
  is J_i J_jᵀ.
* ``"structured"``: Dense layers as (X̃X̃ᵀ) ⊙ (ΔΔᵀ), every other parameter as explicit
  rows R (``features``), so tile (i, j) is R_i R_jᵀ + Σ_l (X̃_l,i X̃_l,jᵀ) ⊙ (Δ_l,i Δ_l,jᵀ).

``method="auto"`` uses ``"structured"`` whenever at least one Dense layer is worth
factorising (LeNet, MLP) and ``"jacobian"`` otherwise (ResNet18). Leaves whose per-sample
gradient is provably zero on every sample (``zero_columns``) can be left out (``dropped``):
they contribute exactly nothing to K.

Where the products run (``products``): ``"host"`` multiplies with NumPy/BLAS (fastest on a
CPU), in float64 or in float32 chunks added in float64 (``host_precision``); ``"device"`` multiplies on the accelerator
where the features are (``device``), float64 or float32 with float64 accumulation, and can
keep the Gram there (``gram_on_device``) for a device eigensolver.

Tiling (``plan``): tiles are computed row by row (i ascending, then j ascending) and
mirrored into the lower triangle. The features of each block are computed at most once
while they fit in the memory budget; blocks that do not fit are recomputed when needed.
Given the same N and b, tile keys are stable, which is what makes ``done_blocks`` /
``on_block`` resumption and the split over several processes possible.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from tqdm.auto import tqdm

from .. import sharding
from ..memory import mapped_empty
from . import device as dev
from .features import Features, feature_fn
from .plan import DEFAULT_MEMORY_BUDGET, PRODUCTS, make_plan, resolve_host_precision
from .structure import LeafKey, check_variables, check_x, layout
from .zero_columns import find_zero_columns

log = logging.getLogger(__name__)

TileKey = tuple[int, int]
# The clock of ``on_block_after_s`` (a module attribute so tests can replace it).
_clock = time.monotonic


class _BlockCache:
    """Features of sample blocks, computed lazily, kept while ``capacity`` allows.

    A block is computed in two steps (``FeatureFn.start``/``finish``): the jitted pass is
    dispatched, then its host part (convolution rows, casts) is formed. When a new block
    is computed and the cache has room, the pass of the next block the tiles will need
    (``prefetch``) can be dispatched first, so that the device computes it while the host
    forms this block's rows and multiplies its tiles.
    """

    def __init__(
        self,
        start: Callable[[int], Any],
        finish: Callable[[int, Any], Features],
        capacity: int,
    ):
        self._start = start
        self._finish = finish
        self._capacity = max(2, capacity)
        self._store: OrderedDict[int, Features] = OrderedDict()
        self._pending: dict[int, Any] = {}
        self.evaluations = 0

    def __contains__(self, idx: int) -> bool:
        return idx in self._store or idx in self._pending

    @property
    def capacity(self) -> int:
        return self._capacity

    def get(self, idx: int, pinned: int, prefetch: int | None = None) -> Features:
        if idx in self._store:
            self._store.move_to_end(idx)
            return self._store[idx]
        pending = self._pending.pop(idx, None)
        while self._store and len(self._store) + len(self._pending) >= self._capacity:
            # Rows are visited in ascending order, so blocks below the current row are
            # never needed again; evict those first, then the least recently used.
            stale = [k for k in self._store if k < pinned]
            victim = stale[0] if stale else next(k for k in self._store if k != pinned)
            del self._store[victim]
        if pending is None:
            pending = self._start(idx)
        if (
            prefetch is not None
            and prefetch != idx
            and prefetch not in self
            and len(self._store) + len(self._pending) + 2 <= self._capacity
        ):
            self._pending[prefetch] = self._start(prefetch)
        self.evaluations += 1
        self._store[idx] = self._finish(idx, pending)
        return self._store[idx]


def _dot_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a bᵀ in the features' dtype (float64 features: float64 products)."""
    return a @ b.T


def _dot_t_float32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a bᵀ in float64 from float32 products over chunks of at most ``CHUNK_COLUMNS``.

    The host counterpart of the device's float32 products (``device.CHUNK_COLUMNS``):
    each chunk's float32 GEMM rounds like float32 over ≤ 1024 terms (~1e-7 relative) and
    the chunks add up in float64.
    """
    cols = a.shape[1]
    if cols <= dev.CHUNK_COLUMNS:
        return (a @ b.T).astype(np.float64)
    edges = np.linspace(0, cols, -(-cols // dev.CHUNK_COLUMNS) + 1).astype(int)
    out = np.zeros((a.shape[0], b.shape[0]))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        out += a[:, lo:hi] @ b[:, lo:hi].T
    return out


class TiledGram:
    """One Gram computation: layout, plan, feature blocks and tile products.

    ``ntk_gram`` is the one-call form. This class is for callers that compute only some
    tiles (one process of several, ``core.sharding.split_tiles``) or assemble tiles that
    another process computed.

    Args:
        module, variables, x, method, block_size, memory_budget_bytes, dtype, mesh,
        products, device_precision, host_precision, dropped, drop_zero_columns: as for
            ``ntk_gram``.
        prefetch: dispatch the next feature block's pass while this block's host work
            runs; default: only when JAX's backend is an accelerator.
    """

    def __init__(
        self,
        module: nn.Module,
        variables: Mapping[str, Any],
        x: Any,
        *,
        method: str = "auto",
        block_size: int | None = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        dtype: Any = np.float64,
        mesh: Any = "auto",
        products: str = "host",
        device_precision: str = "float64",
        host_precision: str = "float64",
        dropped: Collection[LeafKey] = (),
        drop_zero_columns: bool = False,
        prefetch: bool | None = None,
    ):
        self.x = check_x(x)
        self.n = int(self.x.shape[0])
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}.")
        if products not in PRODUCTS:
            raise ValueError(f"products must be one of {', '.join(PRODUCTS)}; got {products!r}.")
        check_variables(variables)
        self.products = products
        self.zero_columns = None
        if drop_zero_columns:
            if dropped:
                raise ValueError("Pass either dropped=... or drop_zero_columns=True, not both.")
            self.zero_columns = find_zero_columns(module, variables, self.x)
            dropped = self.zero_columns.dropped
        self.method, self.structure = layout(
            module, variables, tuple(self.x.shape[1:]), method, dropped
        )
        self.precision_rule = None
        if products == "device":
            self.precision, self.precision_rule = dev.choose_precision(device_precision)
        else:
            self.precision = resolve_host_precision(host_precision, self.dtype)
        self.plan = make_plan(
            self.structure,
            self.n,
            block_size,
            int(memory_budget_bytes),
            self.dtype,
            self.method,
            products,
            self.precision,
        )
        self.plan["product_precision"] = self.precision
        self.block_size, self.n_blocks = self.plan["block_size"], self.plan["n_blocks"]
        # Host features are held in the product precision: float32 features halve the
        # memory and the convolution rows' cost and feed float32 GEMMs directly.
        feature_dtype = np.float32 if products == "host" and self.precision == "float32" else dtype
        self._features = feature_fn(
            module, variables, self.structure, dtype=feature_dtype, on_device=products == "device"
        )
        # Several devices: each block's rows are split over the mesh and the jitted feature
        # pass runs partitioned (GSPMD).
        self._mesh = sharding.resolve_mesh(mesh)
        self._b_dev = sharding.padded_size(self.block_size, self._mesh)
        self._cache = _BlockCache(self._start_block, self._finish_block, self.plan["cached_blocks"])
        # Dispatching the next block's pass early pays where the pass runs on an
        # accelerator; on a CPU the pass and the host work share the same cores and it
        # measured 0.92-1.01x (benchmarks/cpu_kernels.py, LeNet N = 4000, 2 cores).
        self.prefetch = dev.accelerator_present() if prefetch is None else bool(prefetch)
        log.info(
            "NTK Gram: N=%d, method=%s, products=%s (%s), block_size=%d, %d tiles, %d feature "
            "columns/sample (P=%d, %d dropped), ~%.3g product FLOPs.",
            self.n,
            self.method,
            products,
            self.precision,
            self.block_size,
            self.plan["n_tiles"],
            self.plan["feature_dim"],
            self.structure.n_params,
            self.structure.dropped_dim,
            self.plan["estimated_product_flops"],
        )

    # ---------------------------------------------------------------------- tiles
    def keys(self) -> list[TileKey]:
        """Every upper-triangle tile key (i, j), i <= j, in computation order."""
        return [(i, j) for i in range(self.n_blocks) for j in range(i, self.n_blocks)]

    def rows(self, i: int) -> slice:
        """The sample rows of block i."""
        b = self.block_size
        return slice(i * b, min(self.n, (i + 1) * b))

    def check_tiles(self, tiles: Mapping[TileKey, Any]) -> None:
        """Raises if a stored tile does not belong to this tiling (key or shape)."""
        for key, tile in tiles.items():
            i, j = key
            if not (0 <= i <= j < self.n_blocks):
                raise ValueError(
                    f"done_blocks key {key} is not an upper-triangle tile of a {self.n_blocks}x"
                    f"{self.n_blocks} grid (N={self.n}, block_size={self.block_size}); it "
                    "comes from a different run."
                )
            ri, rj = self.rows(i), self.rows(j)
            expected = (ri.stop - ri.start, rj.stop - rj.start)
            if np.shape(tile) != expected:
                raise ValueError(
                    f"done_blocks tile {key} has shape {np.shape(tile)}, expected {expected} "
                    f"for N={self.n} and block_size={self.block_size}; resume with the "
                    "block_size of the first run."
                )

    def _start_block(self, idx: int) -> Any:
        rows = self.rows(idx)
        # pad so the compiled function sees one shape only, divisible by the mesh size
        xb = sharding.shard_batch(sharding.pad_rows(self.x[rows], self._b_dev), self._mesh)
        return self._features.start(xb)

    def _finish_block(self, idx: int, pending: Any) -> Features:
        rows = self.rows(idx)
        features = self._features.finish(pending, rows.stop - rows.start)
        if self.products == "device" and self._mesh is not None:
            features = dev.to_device(features)
        return features

    def _product(self, fi: Features, fj: Features):
        if self.products == "device":
            return dev.tile_product(fi, fj, self.precision)
        (ri,), (rj,) = fi.rows, fj.rows
        dot = _dot_t_float32 if self.precision == "float32" and self.dtype == np.float64 else _dot_t
        tile = dot(ri, rj)
        for xi, xj, di, dj in zip(
            fi.x_factors, fj.x_factors, fi.d_factors, fj.d_factors, strict=True
        ):
            prod = dot(xi, xj)
            prod *= dot(di, dj)
            tile += prod
        return tile

    def _next_block(self, keys: list[TileKey], t: int) -> int | None:
        """The first block the tiles after ``keys[t]`` need that is not cached or pending
        (``None`` without prefetching)."""
        if not self.prefetch:
            return None
        current = set(keys[t])
        for key in keys[t + 1 : t + 1 + 4 * self.n_blocks]:
            for idx in key:
                if idx not in current and idx not in self._cache:
                    return idx
        return None

    def compute(
        self,
        keys: Iterable[TileKey],
        *,
        on_block: Callable[[TileKey, np.ndarray], None] | None = None,
        progress: bool = False,
    ) -> Iterator[tuple[TileKey, Any]]:
        """Computes the tiles ``keys`` (in the given order); yields ``(key, tile)``.

        Tiles are NumPy arrays of ``dtype`` (host products) or float64 device arrays
        (device products). ``on_block(key, tile)`` receives every tile as a NumPy array
        right after it is computed (e.g. to persist it).

        Raises:
            ValueError: a tile with NaN or Inf (the tile and its sample ranges are named).
        """
        keys = list(keys)
        self._features_first(keys)
        bar = tqdm(total=len(keys), desc="NTK tiles", disable=not progress)
        for t, (i, j) in enumerate(keys):
            ahead = self._next_block(keys, t)
            fi = self._cache.get(i, pinned=i, prefetch=ahead)
            fj = self._cache.get(j, pinned=i, prefetch=ahead)
            tile = self._product(fi, fj)
            finite = dev.all_finite(tile) if self.products == "device" else np.isfinite(tile).all()
            if not finite:
                ri, rj = self.rows(i), self.rows(j)
                raise ValueError(
                    f"NTK tile {(i, j)} (rows {ri.start}:{ri.stop}, columns {rj.start}:"
                    f"{rj.stop}) contains NaN or Inf; check the inputs and parameters of "
                    "those samples (non-finite values or overflow)."
                )
            if on_block is not None:
                on_block((i, j), self._host_tile(tile))
            bar.update(1)
            yield (i, j), tile
        bar.close()

    def _features_first(self, keys: list[TileKey]) -> None:
        """Computes the features of every block ``keys`` need before any tile, where they
        all fit in the cache and the passes are not prefetched (a CPU).

        Alternating the jitted pass (XLA's thread pool) with the tile GEMMs (OpenBLAS's
        threads) costs each side the other's spinning threads: LeNet at N = 8 000 took
        4.10-4.19 s tile by tile and 3.72-3.85 s with the features first, the same numbers
        (``benchmarks/cpu_kernels.py --only features_first``).
        """
        if self.prefetch:
            return
        blocks = list(dict.fromkeys(idx for key in keys for idx in key))
        if len(blocks) > self._cache.capacity:
            return
        for idx in blocks:
            self._cache.get(idx, pinned=idx)

    def _host_tile(self, tile: Any) -> np.ndarray:
        if isinstance(tile, np.ndarray):
            return tile.astype(self.dtype, copy=False)
        with dev.x64():
            return np.asarray(tile).astype(self.dtype, copy=False)

    @property
    def feature_block_evaluations(self) -> int:
        return self._cache.evaluations

    # ------------------------------------------------------------------- assembly
    def assemble(self, tiles: Iterable[tuple[TileKey, Any]], *, on_device: bool = False):
        """Writes tiles (and their mirror images) into an (N, N) Gram.

        Args:
            tiles: ``(key, tile)`` pairs covering every key of ``keys()``.
            on_device: assemble a float64/``dtype`` device array (``DeviceGram``) instead
                of a NumPy array.

        Returns:
            K (N, N): NumPy array of ``dtype``, or a device array (use it inside
            ``device.x64()``).

        Raises:
            ValueError: some tiles are missing.
        """
        assembly = _Assembly(self, on_device)
        for key, tile in tiles:
            assembly.put(key, tile)
        return assembly.result()

    def gram(
        self,
        *,
        done_blocks: Mapping[TileKey, np.ndarray] | None = None,
        on_block: Callable[[TileKey, np.ndarray], None] | None = None,
        on_block_after_s: float = 0.0,
        progress: bool = False,
        on_device: bool = False,
    ):
        """The whole Gram: stored tiles reused, the others computed (see ``ntk_gram`` for
        ``on_block`` and ``on_block_after_s``)."""
        done = dict(done_blocks or {})
        self.check_tiles(done)
        todo = [key for key in self.keys() if key not in done]
        assembly = _Assembly(self, on_device)
        for key, tile in done.items():
            assembly.put(key, tile)
        if on_block is None or on_block_after_s <= 0:
            for key, tile in self.compute(todo, on_block=on_block, progress=progress):
                assembly.put(key, tile)
            return assembly.result()
        # Deferred hand-over: nothing until the Gram has run `on_block_after_s`, then the
        # tiles finished so far (read back from the Gram, so nothing is held twice) and
        # every later one as soon as it is placed.
        deadline = _clock() + float(on_block_after_s)
        held: list[TileKey] = []
        for key, tile in self.compute(todo, progress=progress):
            assembly.put(key, tile)
            held.append(key)
            if _clock() >= deadline:
                for finished in held:
                    on_block(finished, assembly.tile(finished))
                held.clear()
        if held:
            log.debug(
                "NTK Gram finished within %.3g s: %d tiles not handed to on_block.",
                on_block_after_s,
                len(held),
            )
        return assembly.result()


class _Assembly:
    """The (N, N) Gram of a ``TiledGram`` being filled tile by tile (upper tiles mirrored)."""

    def __init__(self, job: TiledGram, on_device: bool):
        self.job = job
        self.on_device = on_device
        self.seen: set[TileKey] = set()
        if on_device:
            self.gram = dev.DeviceGram(job.n, job.dtype)
        else:
            self.out = mapped_empty((job.n, job.n), job.dtype)

    def put(self, key: TileKey, tile: Any) -> None:
        ri, rj = self.job.rows(key[0]), self.job.rows(key[1])
        if self.on_device:
            self.gram.put(ri, rj, tile)
        else:
            tile = self.job._host_tile(tile)
            self.out[ri, rj] = tile
            if ri != rj:
                self.out[rj, ri] = tile.T
        self.seen.add(tuple(key))

    def tile(self, key: TileKey) -> np.ndarray:
        """A NumPy copy of the placed tile ``key``."""
        ri, rj = self.job.rows(key[0]), self.job.rows(key[1])
        if self.on_device:
            with dev.x64():
                return self.job._host_tile(self.gram.array[ri, rj])
        return np.ascontiguousarray(self.out[ri, rj])

    def result(self):
        missing = sorted(set(self.job.keys()) - self.seen)
        if missing:
            raise ValueError(
                f"{len(missing)} of {self.job.plan['n_tiles']} Gram tiles are missing, e.g. "
                f"{missing[:5]}; compute them before assembling."
            )
        log.info("NTK Gram done: %d feature-block evaluations.", self.job._cache.evaluations)
        return self.gram.array if self.on_device else self.out


def ntk_gram(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    *,
    done_blocks: Mapping[TileKey, np.ndarray] | None = None,
    on_block: Callable[[TileKey, np.ndarray], None] | None = None,
    on_block_after_s: float = 0.0,
    progress: bool = False,
    gram_on_device: bool = False,
    **options: Any,
) -> Any:
    """Empirical NTK Gram K = J Jᵀ at θ0, blocked over the upper triangle (docs/methods.md §1.4, §3.1).

    Args:
        module: a Flax module with ``apply(variables, x (B, ...), train=False) -> (B, 1)``.
        variables: ``{'params': θ0, ['batch_stats': ...]}``; BN runs in inference mode.
        x: inputs of shape (N, H, W, C).
        done_blocks: tiles ``{(i, j): (b_i, b_j) array}`` with i <= j finished by an
            earlier run with the same N and block_size; they are not recomputed.
        on_block: called as ``on_block((i, j), tile)`` (NumPy tile) after each newly
            computed tile, e.g. to persist it.
        on_block_after_s: hold ``on_block`` back until the Gram has run this many
            seconds: a Gram that finishes sooner hands over nothing (persisting it would
            cost more than recomputing it); one that runs longer hands over the tiles
            finished so far (copied back out of K, so nothing is held twice) and then
            every tile as soon as it is placed. 0 (default): every tile, at once.
        progress: show a tqdm bar over the tiles.
        gram_on_device: return K as a device array (device products only); use it
            inside ``core.ntk.device.x64()``.
        **options: how the Gram is laid out and computed (:class:`TiledGram`):
            method: ``"auto"`` (structured when a Dense layer can be factorised, else
                jacobian), ``"jacobian"`` (explicit J blocks, J_i J_jᵀ) or ``"structured"``
                (Dense layers as (X̃X̃ᵀ)⊙(ΔΔᵀ), explicit J for the other parameters).
            block_size: rows per tile b; default from N and the budget. Keep it fixed to
                resume a run: tile keys depend on it.
            memory_budget_bytes: bound on cached per-block features plus tile temporaries
                (the (N, N) output itself is not counted); device memory for device products.
            dtype: dtype of K. Host products: ``np.float64`` (default) casts the float32
                features to float64 before every product, so K accumulates in float64;
                ``np.float32`` is faster and ~1e-6 relative. Device products always
                accumulate in float64 and cast the result.
            mesh: ``"auto"`` (default: split the rows of each feature block over all local
                devices when there are several), ``None`` (one device) or a
                ``jax.sharding.Mesh`` with axis ``"data"`` (``core.sharding``).
            products: ``"host"`` (NumPy/BLAS) or ``"device"`` (JAX on the default device).
            device_precision: for device products, ``"float64"``, ``"float32"`` (float32
                chunks accumulated in float64) or ``"auto"`` (measured rule, ``device``).
            host_precision: for host products with a float64 Gram, ``"float64"`` (the
                default here: float64 features and products, exact up to float64
                round-off), ``"float32"`` (float32 features, float32 GEMMs over chunks of
                ≤ 1024 columns added in float64: ~2x faster on a CPU, ~1e-7 relative per
                entry) or ``"auto"`` (= ``"float32"``, ``plan.resolve_host_precision``).
            dropped: flattened keys of parameter leaves to leave out because their per-sample
                gradient is identically zero (``zero_columns.find_zero_columns``).
            drop_zero_columns: find those leaves first, over all N samples of x (exact,
                ``zero_columns``); not together with ``dropped``.

    Returns:
        K of shape (N, N), symmetric, in ``dtype``: a NumPy array, or a device array
        with ``gram_on_device``.

    Raises:
        ValueError: bad arguments, a tile containing NaN/Inf (the tile is named), a
            ``done_blocks`` tile of the wrong shape, or a budget too small for one block.
    """
    if gram_on_device and options.get("products", "host") != "device":
        raise ValueError("gram_on_device=True needs products='device'.")
    job = TiledGram(module, variables, x, **options)
    return job.gram(
        done_blocks=done_blocks,
        on_block=on_block,
        on_block_after_s=on_block_after_s,
        progress=progress,
        on_device=gram_on_device,
    )


def host_array(a: Any) -> np.ndarray:
    """A NumPy copy of a (possibly float64 device) array."""
    if isinstance(a, np.ndarray):
        return a
    with dev.x64():
        return np.asarray(jax.device_get(a))
