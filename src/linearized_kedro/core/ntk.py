"""Empirical NTK Gram matrices at θ0: Jacobians, blocked symmetric Gram, K·v products.

The kernel is Θ(x, x') = ⟨∇θ f(θ0, x), ∇θ f(θ0, x')⟩ with the full Jacobian inner product
and a single output, so the Gram matrix is K = J Jᵀ with J the (N, P) Jacobian (SPEC §1.4).
f runs BatchNorm in inference mode (SPEC §1.3), which makes samples independent and the
per-sample Jacobian well defined.

Two exact ways of producing the (N, N) Gram are implemented; both are blocked over the
upper triangle of the tile grid (SPEC §3.1, §4 item 13):

* ``"jacobian"``: the explicit per-sample Jacobian rows J_b (b, P) of each row block;
  tile (i, j) is J_i J_jᵀ.
* ``"structured"``: a ``nn.Dense`` layer y = x W + c applied to one vector per sample has
  per-sample gradient ∂f/∂W = x̃ ⊗ δ, with x̃ = [x, 1] its input (the ones column carries
  the bias) and δ = ∂f/∂y the cotangent at its output. Hence its contribution to K is the
  identity (X̃ X̃ᵀ) ⊙ (Δ Δᵀ), which costs (d_in + 1 + d_out) per entry instead of
  (d_in + 1)·d_out. Every other parameter (convolutions, BatchNorm, small dense layers)
  keeps explicit per-sample Jacobian rows R, so tile (i, j) is
  R_i R_jᵀ + Σ_l (X̃_l,i X̃_l,jᵀ) ⊙ (Δ_l,i Δ_l,jᵀ).
  X̃ and Δ are read off one forward/backward pass with a zero "perturbation" added to each
  such Dense output (``flax.linen.intercept_methods``); in inference mode the samples are
  independent, so the gradient of f(x_i) w.r.t. sample i's perturbation is δ_i.

``method="auto"`` uses ``"structured"`` whenever at least one Dense layer is worth
factorising (LeNet, MLP) and ``"jacobian"`` otherwise (ResNet18: its only Dense has one
output and is kept explicit).

Tiling. Samples are split into ``n_blocks = ceil(N / b)`` consecutive blocks of
``block_size`` b (the last one may be shorter; it is zero-padded to b inside the compiled
feature function so that only one shape is ever compiled). Tile (i, j), i <= j, is
K[i*b:(i+1)*b, j*b:(j+1)*b]; tiles are computed row by row (i ascending, then j ascending)
and mirrored into the lower triangle. The per-block features (R, X̃, Δ, or J rows) of each
block are computed at most once while they fit in the memory budget; blocks that do not fit
are recomputed when needed. Given the same N and b, tile keys are stable, which is what
makes ``done_blocks`` / ``on_block`` resumption possible.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax
from tqdm.auto import tqdm

from . import sharding
from .layers import Conv as ProjectConv

log = logging.getLogger(__name__)

METHODS = ("auto", "jacobian", "structured")
DEFAULT_MEMORY_BUDGET = 4 * 2**30

# A factorised Dense layer costs two extra elementwise passes over each tile (the X̃X̃ᵀ and
# ΔΔᵀ tiles and their Hadamard product); count them as this many extra feature columns
# when deciding whether factorising pays off.
_HADAMARD_OVERHEAD_COLUMNS = 8


# --------------------------------------------------------------------------------------
# Model structure
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Site:
    """A layer whose per-sample gradient is formed from its input and output cotangent.

    ``kind`` is ``"dense_factor"`` (contribution (X̃X̃ᵀ)⊙(ΔΔᵀ)), ``"dense"`` (explicit
    rows x̃ ⊗ δ) or ``"conv"`` (explicit rows Σ_positions patch ⊗ δ).
    """

    kind: str
    path: tuple[str, ...]  # module path == key path of its params subtree
    in_shape: tuple[int, ...]  # per-sample input shape
    out_shape: tuple[int, ...]  # per-sample output shape
    use_bias: bool
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[tuple[int, int], ...] = ()

    @property
    def x_dim(self) -> int:
        return self.in_shape[-1] + int(self.use_bias)

    @property
    def d_out(self) -> int:
        return self.out_shape[-1]

    @property
    def explicit_dim(self) -> int:
        if self.kind == "dense":
            return self.x_dim * self.d_out
        if self.kind == "conv":
            return int(np.prod(self.kernel_size)) * self.in_shape[-1] * self.d_out + (
                self.d_out if self.use_bias else 0
            )
        return 0


@dataclass(frozen=True)
class _Structure:
    """How per-block features are laid out for one model and input shape."""

    sites: tuple[_Site, ...]
    rest_keys: tuple[tuple[str, ...], ...]  # flattened param paths left to vmap(grad)
    rest_dim: int
    n_params: int

    @property
    def factor_sites(self) -> tuple[_Site, ...]:
        return tuple(s for s in self.sites if s.kind == "dense_factor")

    @property
    def explicit_dim(self) -> int:
        return self.rest_dim + sum(s.explicit_dim for s in self.sites)

    @property
    def feature_dim(self) -> int:
        return self.explicit_dim + sum(s.x_dim + s.d_out for s in self.factor_sites)


def _is_param_tree(variables: Any) -> None:
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "variables must be the mapping returned by init_variables, with a 'params' "
            f"entry (and 'batch_stats' for ResNet18); got {type(variables).__name__}."
        )


def _split(variables: Mapping[str, Any]) -> tuple[dict, dict]:
    _is_param_tree(variables)
    state = {k: v for k, v in variables.items() if k != "params"}
    return dict(variables["params"]), state


def _check_x(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"x must be a batch of inputs of shape (N, ...) with N >= 1; got shape {x.shape}."
        )
    return x


def _tuple(v: Any, rank: int, default: int = 1) -> tuple[int, ...]:
    if v is None:
        return (default,) * rank
    if isinstance(v, int):
        return (v,) * rank
    return tuple(int(a) for a in v)


def _is_conv(mod: nn.Module) -> bool:
    # Exact classes only: a subclass could change what the kernel multiplies.
    return type(mod) is nn.Conv or type(mod) is ProjectConv


def _conv_geometry(mod: nn.Module, in_shape: tuple[int, ...]) -> tuple | None:
    """(kernel_size, strides, explicit pads) of a plain 2-D conv, or None if unsupported."""
    ks = _tuple(mod.kernel_size, 2)
    if (
        len(ks) != 2
        or len(in_shape) != 4
        or getattr(mod, "feature_group_count", 1) != 1
        or _tuple(getattr(mod, "input_dilation", None), 2) != (1, 1)
        or _tuple(getattr(mod, "kernel_dilation", None), 2) != (1, 1)
        or getattr(mod, "mask", None) is not None
        or getattr(mod, "shared_weights", True) is not True
    ):
        return None
    strides = _tuple(mod.strides, 2)
    padding = mod.padding
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            return None  # CIRCULAR / CAUSAL pad differently; leave to vmap(grad)
        pads = lax.padtype_to_pads(in_shape[1:3], ks, strides, padding.upper())
    else:
        try:
            pads = nn.linear.canonicalize_padding(padding, 2)
        except ValueError:
            return None
    return ks, strides, tuple((int(lo), int(hi)) for lo, hi in pads)


def _probe_sites(module: nn.Module, variables: Mapping, sample_shape, dtype) -> list[_Site]:
    """Finds the Dense/Conv calls whose per-sample gradient can be built from (input, δ)."""
    calls: dict[tuple[str, ...], list] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and (
            type(context.module) is nn.Dense or _is_conv(context.module)
        ):
            calls.setdefault(tuple(context.module.path), []).append(
                (context.module, tuple(args[0].shape), tuple(out.shape))
            )
        return out

    def run(v, x):
        with nn.intercept_methods(interceptor):
            return module.apply(v, x, train=False)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct((1, *sample_shape), dtype))
    sites = []
    for path, uses in calls.items():
        # The identities need one call per sample: a layer called twice (weight sharing)
        # sums several products and is left to vmap(grad).
        if len(uses) != 1:
            continue
        mod, in_shape, out_shape = uses[0]
        if in_shape[0] != 1 or out_shape[0] != 1:
            continue
        if type(mod) is nn.Dense:
            if len(in_shape) != 2:
                continue  # Dense over spatial positions: a sum over positions, not a site
            sites.append(_Site("dense", path, in_shape[1:], out_shape[1:], bool(mod.use_bias)))
        elif _is_conv(mod):
            geometry = _conv_geometry(mod, in_shape)
            if geometry is not None:
                sites.append(
                    _Site("conv", path, in_shape[1:], out_shape[1:], bool(mod.use_bias), *geometry)
                )
    return sites


def _analyse(
    module: nn.Module, variables: Mapping, sample_shape: tuple[int, ...] | None, dtype, method
) -> _Structure:
    """Decides which layers get per-site treatment (only exact cases) for ``method``."""
    params, _ = _split(variables)
    flat = traverse_util.flatten_dict(params)
    n_params = int(sum(np.size(v) for v in flat.values()))
    sites: list[_Site] = []
    if method == "structured":
        if sample_shape is not None:
            candidates = _probe_sites(module, variables, sample_shape, dtype)
        else:  # no input shape: every 2-D 'kernel' is taken as a Dense acting on vectors
            candidates = [
                _Site(
                    "dense",
                    key[:-1],
                    (np.shape(leaf)[0],),
                    (np.shape(leaf)[1],),
                    (*key[:-1], "bias") in flat,
                )
                for key, leaf in flat.items()
                if key[-1] == "kernel" and np.ndim(leaf) == 2
            ]
        for s in candidates:
            expected = {(*s.path, "kernel")} | ({(*s.path, "bias")} if s.use_bias else set())
            owned = {k for k in flat if k[: len(s.path)] == s.path}
            if owned != expected:
                continue  # unexpected parameters under that path: leave to vmap(grad)
            if s.kind == "dense" and (
                s.x_dim * s.d_out > s.x_dim + s.d_out + _HADAMARD_OVERHEAD_COLUMNS
            ):
                s = _Site("dense_factor", s.path, s.in_shape, s.out_shape, s.use_bias)
            sites.append(s)
    taken = set()
    for s in sites:
        taken |= {(*s.path, "kernel")} | ({(*s.path, "bias")} if s.use_bias else set())
    rest_keys = tuple(k for k in flat if k not in taken)
    rest_dim = int(sum(np.size(flat[k]) for k in rest_keys))
    return _Structure(tuple(sites), rest_keys, rest_dim, n_params)


def _resolve_method(method: str, structure_if_structured: _Structure) -> str:
    if method not in METHODS:
        raise ValueError(f"Unknown Gram method {method!r}; valid methods: {', '.join(METHODS)}.")
    if method == "auto":
        # Structured pays off when a Dense layer is factorised or when no parameter is
        # left to the per-sample vmap(grad) (which costs as much as the jacobian path).
        st = structure_if_structured
        return "structured" if st.factor_sites or (st.sites and not st.rest_keys) else "jacobian"
    return method


# --------------------------------------------------------------------------------------
# Per-block features
# --------------------------------------------------------------------------------------


def _conv_rows_host(
    site: _Site, u: np.ndarray, delta: np.ndarray, chunk: int = 64, per_offset: bool | None = None
) -> np.ndarray:
    """Per-sample conv kernel(+bias) gradients Σ_positions patch ⊗ δ, on the host.

    ∂f(x_i)/∂kernel[dy, dx, c, o] = Σ_positions upad_i[pos + (dy, dx), c] δ_i[pos, o],
    formed with numpy's stacked matmul (one small GEMM per sample), either per kernel
    offset ((C_in × positions) · (positions × C_out)) or, when C_in·C_out is small, on an
    im2col copy ((kh·kw·C_in × positions) · (positions × C_out), samples in chunks so the
    copy stays small). Measured on the 2-core CPU, 1000 samples: LeNet conv 0 (3→6
    channels) 0.15 s im2col vs 0.37 s per offset, conv 1 (6→16) 0.1–0.25 s per offset vs
    0.55–1.0 s im2col; an XLA grouped convolution with the batch as feature groups (the
    previous implementation) took 0.65 s and 0.9 s.

    Args:
        site: the conv layer's geometry.
        u: (b, H, W, C_in) layer inputs; delta: (b, H_out, W_out, C_out) cotangents.
        chunk: samples per im2col copy.
        per_offset: force the per-offset (True) or im2col (False) form; None picks
            per offset when C_in·C_out >= 64.

    Returns:
        (b, kh·kw·C_in·C_out [+ C_out]) rows in (kh, kw, C_in, C_out) order, then the bias.
    """
    b, ci = u.shape[0], u.shape[-1]
    (kh, kw), (sh, sw) = site.kernel_size, site.strides
    ho, wo, co = delta.shape[1:]
    nk = kh * kw * ci * co
    upad = np.pad(u, ((0, 0), *site.pads, (0, 0)))
    dflat = delta.reshape(b, ho * wo, co)
    rows = np.empty((b, nk + (co if site.use_bias else 0)), u.dtype)
    if per_offset if per_offset is not None else ci * co >= 64:
        out = np.empty((b, kh, kw, ci, co), u.dtype)
        for dy in range(kh):
            for dx in range(kw):
                a = upad[:, dy : dy + (ho - 1) * sh + 1 : sh, dx : dx + (wo - 1) * sw + 1 : sw]
                out[:, dy, dx] = np.matmul(a.reshape(b, ho * wo, ci).transpose(0, 2, 1), dflat)
        rows[:, :nk] = out.reshape(b, nk)
    else:
        for lo in range(0, b, chunk):
            hi = min(b, lo + chunk)
            win = np.lib.stride_tricks.sliding_window_view(upad[lo:hi], (kh, kw), axis=(1, 2))
            win = win[:, : ho * sh : sh, : wo * sw : sw]  # (c, ho, wo, C_in, kh, kw)
            patches = np.ascontiguousarray(win.transpose(0, 4, 5, 3, 1, 2)).reshape(
                hi - lo, kh * kw * ci, ho * wo
            )
            rows[lo:hi, :nk] = np.matmul(patches, dflat[lo:hi]).reshape(hi - lo, -1)
    if site.use_bias:
        rows[:, nk:] = dflat.sum(axis=1)
    return rows


def _feature_fn(module: nn.Module, variables: Mapping, structure: _Structure) -> Callable:
    """x (b, ...) -> (R (b, explicit_dim), [X̃_l (b, x_dim)], [Δ_l (b, d_out)]).

    One batched forward/backward pass gives every site's input and output cotangent δ
    (zero perturbations added to the site outputs; in inference mode sample i's
    perturbation only reaches f(x_i), so ∂Σf/∂pert_i = δ_i). Parameters outside the sites
    get explicit rows from ``vmap(grad)`` per sample.
    """
    params, state = _split(variables)
    flat = traverse_util.flatten_dict(params)
    rest_set = set(structure.rest_keys)
    fixed = {k: v for k, v in flat.items() if k not in rest_set}
    rest = {k: flat[k] for k in structure.rest_keys}
    compiled = _compiled_features(module, structure, jnp.dtype(_leaf_dtype(params)).name)
    conv_sites = [s for s in structure.sites if s.kind == "conv"]

    def run(x):
        r, conv_io, xt, ds = compiled(fixed, rest, state, x)
        if not conv_sites:
            return r, xt, ds
        # Conv rows are formed on the host (``_conv_rows_host``); their columns follow
        # the others. Any fixed column order gives the same R Rᵀ.
        rows = [
            _conv_rows_host(s, np.asarray(u), np.asarray(d))
            for s, (u, d) in zip(conv_sites, conv_io, strict=True)
        ]
        return np.concatenate([np.asarray(r), *rows], axis=1), xt, ds

    return run


@functools.lru_cache(maxsize=32)
def _compiled_features(module: nn.Module, structure: _Structure, dtype: str) -> Callable:
    # Parameters are arguments, not closed-over constants: XLA compiles large constants
    # slowly, and the compiled function is reused by later calls with the same model.
    sites = {s.path: s for s in structure.sites}

    def apply_sites(p_flat, state, perts, x):
        inputs: dict[tuple[str, ...], jax.Array] = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            path = tuple(context.module.path)
            if context.method_name == "__call__" and path in sites:
                inputs[path] = args[0]
                out = out + perts[path]
            return out

        p = traverse_util.unflatten_dict(p_flat)
        with nn.intercept_methods(interceptor):
            y = module.apply({"params": p, **state}, x, train=False)
        return y[:, 0], inputs

    def per_sample_rest(rest_p, fixed, state, x_i):
        perts = {s.path: jnp.zeros((1, *s.out_shape), dtype) for s in structure.sites}
        return apply_sites({**fixed, **rest_p}, state, perts, x_i[None])[0][0]

    rest_grad = jax.vmap(jax.grad(per_sample_rest), in_axes=(None, None, None, 0))

    @jax.jit
    def features(fixed, rest, state, x):
        b = x.shape[0]
        with jax.default_matmul_precision("highest"):
            perts = {s.path: jnp.zeros((b, *s.out_shape), dtype) for s in structure.sites}

            def total(pt):
                y, inputs = apply_sites({**fixed, **rest}, state, pt, x)
                return y.sum(), inputs

            deltas, inputs = jax.grad(total, has_aux=True)(perts) if perts else ({}, {})
            cols = []
            if structure.rest_keys:
                g = rest_grad(rest, fixed, state, x)
                cols += [g[k].reshape(b, -1) for k in structure.rest_keys]
            xt, ds, conv_io = [], [], []
            for s in structure.sites:
                u, d = inputs[s.path], deltas[s.path]
                if s.kind == "conv":
                    conv_io.append((u, d))
                    continue
                if s.use_bias:
                    u = jnp.concatenate([u, jnp.ones((b, 1), u.dtype)], axis=1)
                if s.kind == "dense":
                    cols.append((u[:, :, None] * d[:, None, :]).reshape(b, -1))
                else:
                    xt.append(u)
                    ds.append(d)
        r = jnp.concatenate(cols, axis=1) if cols else jnp.zeros((b, 0), dtype)
        return r, conv_io, xt, ds

    return features


def _leaf_dtype(params: Any):
    leaves = jax.tree_util.tree_leaves(params)
    return leaves[0].dtype if leaves else jnp.float32


@functools.lru_cache(maxsize=32)
def _per_sample_grads(module: nn.Module) -> Callable:
    def f1(p, state, x_i):
        return module.apply({"params": p, **state}, x_i[None], train=False)[0, 0]

    return jax.jit(jax.vmap(jax.grad(f1), in_axes=(None, None, 0)))


def flat_jacobian(module: nn.Module, variables: Mapping[str, Any], x: Any) -> jax.Array:
    """Per-sample Jacobian of f(θ, x) = module.apply(variables, x, train=False)[:, 0].

    Args:
        module: a Flax module with ``apply(variables, x (B, ...), train=False) -> (B, 1)``.
        variables: ``{'params': θ, ['batch_stats': ...]}``; BN state is held fixed.
        x: inputs of shape (n, H, W, C) (any (n, ...) the module accepts).

    Returns:
        J of shape (n, P), columns in ``jax.flatten_util.ravel_pytree(params)`` order.
    """
    x = _check_x(x)
    params, state = _split(variables)

    with jax.default_matmul_precision("highest"):
        g = _per_sample_grads(module)(params, state, x)
    n = x.shape[0]
    return jnp.concatenate([leaf.reshape(n, -1) for leaf in jax.tree_util.tree_leaves(g)], 1)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------


def _default_block_size(n: int, feature_dim: int, itemsize: int, budget: int) -> int:
    # Tiles of ~500-1000 rows keep the matmuls BLAS-efficient while the upper triangle
    # saves ~40 % of the products; shrink if one block's features would not fit.
    b = min(n, 1000 if n > 2000 else max(1, math.ceil(n / 2)) if n > 500 else n)
    per_row = max(1, feature_dim * itemsize)
    while b > 1 and 2 * b * per_row + 4 * b * b * 8 > budget:
        b = max(1, b // 2)
    return b


def _plan(structure: _Structure, n: int, block_size, budget: int, dtype, method: str) -> dict:
    itemsize = np.dtype(dtype).itemsize
    fdim = structure.feature_dim
    b = _default_block_size(n, fdim, itemsize, budget) if block_size is None else int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size}.")
    b = min(b, n)
    n_blocks = math.ceil(n / b)
    block_bytes = b * fdim * itemsize
    # Tile temporaries: the tile itself plus one X̃X̃ᵀ and one ΔΔᵀ product at a time, and
    # the float32 block coming out of JAX before the cast.
    tile_bytes = b * b * 8 * (3 if structure.factor_sites else 1) + b * fdim * 4
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
        "n": n,
        "block_size": b,
        "n_blocks": n_blocks,
        "n_tiles": n_tiles,
        "feature_dim": fdim,
        "n_params": structure.n_params,
        "n_factorised_dense": len(structure.factor_sites),
        "n_conv_sites": sum(s.kind == "conv" for s in structure.sites),
        "explicit_jacobian_columns": structure.explicit_dim,
        "bytes_per_block": block_bytes,
        "cached_blocks": cache_blocks,
        "feature_block_evaluations": n_blocks + recomputed,
        "estimated_peak_bytes": int(min(cache_blocks, n_blocks) * block_bytes + tile_bytes),
        "gram_bytes": n * n * itemsize,
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
) -> dict:
    """Describes how ``ntk_gram`` would tile an (n, n) Gram: sizes, bytes and FLOPs.

    Args:
        module, variables: as for ``ntk_gram``.
        n: number of samples N.
        input_shape: per-sample input shape (H, W, C); used to find the Dense layers that
            act on vectors. Without it every 2-D ``kernel`` is assumed to be such a layer.
        method, block_size, memory_budget_bytes, dtype: as for ``ntk_gram``.

    Returns:
        A dict with ``method``, ``block_size``, ``n_blocks``, ``n_tiles``,
        ``feature_dim`` (columns per sample), ``cached_blocks``,
        ``estimated_peak_bytes``, ``estimated_product_flops`` and
        ``explicit_gram_flops`` (2·N²·P, the cost of J Jᵀ on the full square).

    Raises:
        ValueError: bad ``n``/``method``/``block_size`` or a budget below one block pair.
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of samples; got {n}.")
    if method not in METHODS:
        raise ValueError(f"Unknown Gram method {method!r}; valid methods: {', '.join(METHODS)}.")
    leaf_dtype = _leaf_dtype(_split(variables)[0])
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    structured = _analyse(module, variables, shape, leaf_dtype, "structured")
    resolved = _resolve_method(method, structured)
    structure = (
        structured
        if resolved == "structured"
        else _analyse(module, variables, shape, leaf_dtype, "jacobian")
    )
    return _plan(structure, int(n), block_size, int(memory_budget_bytes), dtype, resolved)


# --------------------------------------------------------------------------------------
# The Gram
# --------------------------------------------------------------------------------------


class _BlockCache:
    """Features of sample blocks, computed lazily, kept while ``capacity`` allows."""

    def __init__(self, compute: Callable[[int], tuple], capacity: int):
        self._compute = compute
        self._capacity = max(2, capacity)
        self._store: OrderedDict[int, tuple] = OrderedDict()
        self.evaluations = 0

    def get(self, idx: int, pinned: int) -> tuple:
        if idx in self._store:
            self._store.move_to_end(idx)
            return self._store[idx]
        while len(self._store) >= self._capacity:
            # Rows are visited in ascending order, so blocks below the current row are
            # never needed again; evict those first, then the least recently used.
            stale = [k for k in self._store if k < pinned]
            victim = stale[0] if stale else next(k for k in self._store if k != pinned)
            del self._store[victim]
        self.evaluations += 1
        self._store[idx] = self._compute(idx)
        return self._store[idx]


def ntk_gram(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    *,
    method: str = "auto",
    block_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    dtype: Any = np.float64,
    done_blocks: Mapping[tuple[int, int], np.ndarray] | None = None,
    on_block: Callable[[tuple[int, int], np.ndarray], None] | None = None,
    progress: bool = False,
    mesh: Any = "auto",
) -> np.ndarray:
    """Empirical NTK Gram K = J Jᵀ at θ0, blocked over the upper triangle (SPEC §1.4, §3.1).

    Args:
        module: a Flax module with ``apply(variables, x (B, ...), train=False) -> (B, 1)``.
        variables: ``{'params': θ0, ['batch_stats': ...]}``; BN runs in inference mode.
        x: inputs of shape (N, H, W, C).
        method: ``"auto"`` (structured when a Dense layer can be factorised, else
            jacobian), ``"jacobian"`` (explicit J blocks, J_i J_jᵀ) or ``"structured"``
            (Dense layers as (X̃X̃ᵀ)⊙(ΔΔᵀ), explicit J for the other parameters).
        block_size: rows per tile b; default from N and the budget. Keep it fixed to
            resume a run: tile keys depend on it.
        memory_budget_bytes: bound on cached per-block features plus tile temporaries
            (the (N, N) output itself is not counted).
        dtype: dtype of the products and of K. ``np.float64`` (default) casts the float32
            features to float64 before every product, so K accumulates in float64;
            ``np.float32`` is faster and ~1e-6 relative.
        done_blocks: tiles ``{(i, j): (b_i, b_j) array}`` with i <= j finished by an
            earlier run with the same N and block_size; they are not recomputed.
        on_block: called as ``on_block((i, j), tile)`` after each newly computed tile,
            e.g. to persist it.
        progress: show a tqdm bar over the tiles.
        mesh: ``"auto"`` (default: split the rows of each feature block over all local
            devices when there are several), ``None`` (one device) or a
            ``jax.sharding.Mesh`` with axis ``"data"`` (``core.sharding``). Same K either
            way, to float tolerance.

    Returns:
        K of shape (N, N), symmetric, in ``dtype``.

    Raises:
        ValueError: bad arguments, a tile containing NaN/Inf (the tile is named), a
            ``done_blocks`` tile of the wrong shape, or a budget too small for one block.
    """
    x = _check_x(x)
    n = int(x.shape[0])
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dtype}.")
    params, _ = _split(variables)
    leaf_dtype = _leaf_dtype(params)
    sample_shape = tuple(x.shape[1:])
    if method not in METHODS:
        raise ValueError(f"Unknown Gram method {method!r}; valid methods: {', '.join(METHODS)}.")
    structure = _analyse(module, variables, sample_shape, leaf_dtype, "structured")
    method = _resolve_method(method, structure)
    if method == "jacobian":
        structure = _analyse(module, variables, sample_shape, leaf_dtype, "jacobian")
    plan = _plan(structure, n, block_size, int(memory_budget_bytes), dtype, method)
    b, n_blocks = plan["block_size"], plan["n_blocks"]
    log.info(
        "NTK Gram: N=%d, method=%s, block_size=%d, %d tiles, %d feature columns/sample "
        "(P=%d), ~%.3g product FLOPs.",
        n,
        method,
        b,
        plan["n_tiles"],
        plan["feature_dim"],
        structure.n_params,
        plan["estimated_product_flops"],
    )

    done = dict(done_blocks or {})
    for key, tile in done.items():
        i, j = key
        if not (0 <= i <= j < n_blocks):
            raise ValueError(
                f"done_blocks key {key} is not an upper-triangle tile of a {n_blocks}x"
                f"{n_blocks} grid (N={n}, block_size={b}); it comes from a different run."
            )
        expected = (min(b, n - i * b), min(b, n - j * b))
        if np.shape(tile) != expected:
            raise ValueError(
                f"done_blocks tile {key} has shape {np.shape(tile)}, expected {expected} for "
                f"N={n} and block_size={b}; resume with the block_size of the first run."
            )

    features = _feature_fn(module, variables, structure)
    # Several devices: each block's rows are split over the mesh and the jitted feature
    # pass runs partitioned (GSPMD); the products stay on the host (DESIGN "Scale").
    mesh = sharding.resolve_mesh(mesh)
    b_dev = sharding.padded_size(b, mesh)

    def compute_block(idx: int) -> tuple:
        lo, hi = idx * b, min(n, (idx + 1) * b)
        # pad so the compiled function sees one shape only, divisible by the mesh size
        xb = sharding.shard_batch(sharding.pad_rows(x[lo:hi], b_dev), mesh)
        r, xt, deltas = features(xb)
        m = hi - lo
        return (
            np.asarray(r, dtype=dtype)[:m],
            [np.asarray(a, dtype=dtype)[:m] for a in xt],
            [np.asarray(a, dtype=dtype)[:m] for a in deltas],
        )

    cache = _BlockCache(compute_block, plan["cached_blocks"])
    gram = np.empty((n, n), dtype=dtype)
    todo = [(i, j) for i in range(n_blocks) for j in range(i, n_blocks)]
    bar = tqdm(total=len(todo), desc="NTK tiles", disable=not progress)
    for i, j in todo:
        if (i, j) in done:
            tile = np.asarray(done[(i, j)], dtype=dtype)
        else:
            fi = cache.get(i, pinned=i)
            fj = cache.get(j, pinned=i)
            tile = fi[0] @ fj[0].T
            for xi, xj, di, dj in zip(fi[1], fj[1], fi[2], fj[2], strict=True):
                prod = xi @ xj.T
                prod *= di @ dj.T
                tile += prod
            if not np.all(np.isfinite(tile)):
                raise ValueError(
                    f"NTK tile {(i, j)} (rows {i * b}:{min(n, (i + 1) * b)}, columns "
                    f"{j * b}:{min(n, (j + 1) * b)}) contains NaN or Inf; check the inputs "
                    "and parameters of those samples (non-finite values or overflow)."
                )
            if on_block is not None:
                on_block((i, j), tile)
        ri, rj = slice(i * b, min(n, (i + 1) * b)), slice(j * b, min(n, (j + 1) * b))
        gram[ri, rj] = tile
        if i != j:
            gram[rj, ri] = tile.T
        bar.update(1)
    bar.close()
    log.info("NTK Gram done: %d feature-block evaluations.", cache.evaluations)
    return gram


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
    x = _check_x(x)
    params, state = _split(variables)
    v = jnp.asarray(v, dtype=_leaf_dtype(params))
    squeeze = v.ndim == 1
    if squeeze:
        v = v[:, None]
    if v.ndim != 2 or v.shape[0] != x.shape[0]:
        raise ValueError(
            f"v must have shape (N,) or (N, m) with N={x.shape[0]} rows; got {v.shape}."
        )

    def f(p):
        return module.apply({"params": p, **state}, x, train=False)[:, 0]

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


# --------------------------------------------------------------------------------------
# Rectangular kernel (Nyström)
# --------------------------------------------------------------------------------------


def ntk_cross_gram(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    landmarks: Any,
    *,
    memory_budget_bytes: int = 4 * 2**30,
    dtype: Any = np.float64,
    progress: bool = False,
) -> np.ndarray:
    """The NTK between all samples and m landmarks, K_nm = J(x) J(landmarks)ᵀ.

    The landmarks' Jacobian (m, P) is held once; the samples' Jacobian rows are streamed
    in blocks that fit ``memory_budget_bytes`` next to it (SPEC §3.1, Nyström path).

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
