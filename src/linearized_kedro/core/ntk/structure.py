"""Which layers of a network get a structured per-sample gradient (docs/methods.md §1.4, §3.1).

A ``nn.Dense`` layer y = x W + c applied to one vector per sample has per-sample gradient
∂f/∂W = x̃ ⊗ δ, with x̃ = [x, 1] its input and δ = ∂f/∂y the cotangent at its output; a
plain 2-D convolution has ∂f/∂W = Σ_positions patch ⊗ δ. Such a layer is a *site*: its
contribution to the Gram is built from (input, δ) of one batched forward/backward pass
instead of a per-sample ``vmap(grad)``. This module probes a model's layer calls once
(``jax.eval_shape``, no FLOPs), decides which calls are sites (only exact cases) and lays
out the per-sample features: explicit Jacobian rows R for everything else, and the
factors X̃, Δ of the Dense layers worth factorising as (X̃X̃ᵀ) ⊙ (ΔΔᵀ).

Parameter leaves proven to have an identically zero per-sample gradient (``zero_columns``)
are left out of the layout entirely.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from ..layers import Conv as ProjectConv
from ..models import split_variables

METHODS = ("auto", "jacobian", "structured")

# A factorised Dense layer costs two extra elementwise passes over each tile (the X̃X̃ᵀ and
# ΔΔᵀ tiles and their Hadamard product); count them as this many extra feature columns
# when deciding whether factorising pays off.
HADAMARD_OVERHEAD_COLUMNS = 8

LeafKey = tuple[str, ...]


@dataclass(frozen=True)
class Site:
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
    def param_keys(self) -> frozenset[LeafKey]:
        """The flattened parameter keys this site owns (kernel, and bias if any)."""
        keys = {(*self.path, "kernel")}
        if self.use_bias:
            keys.add((*self.path, "bias"))
        return frozenset(keys)

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
class Structure:
    """How per-block features are laid out for one model, input shape and method.

    Attributes:
        sites: the structured layers (see ``Site``).
        rest_keys: flattened parameter keys left to a per-sample ``vmap(grad)``.
        rest_dim: number of scalar parameters in ``rest_keys``.
        n_params: P, all scalar parameters of the model (dropped ones included).
        dropped_keys: leaves left out because their per-sample gradient is identically
            zero on the samples at hand (``zero_columns``); they contribute nothing to K.
        dropped_dim: number of scalar parameters in ``dropped_keys``.
    """

    sites: tuple[Site, ...]
    rest_keys: tuple[LeafKey, ...]
    rest_dim: int
    n_params: int
    dropped_keys: tuple[LeafKey, ...] = ()
    dropped_dim: int = 0

    @property
    def factor_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind == "dense_factor")

    @property
    def conv_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind == "conv")

    @property
    def explicit_dim(self) -> int:
        return self.rest_dim + sum(s.explicit_dim for s in self.sites)

    @property
    def feature_dim(self) -> int:
        return self.explicit_dim + sum(s.x_dim + s.d_out for s in self.factor_sites)


def check_variables(variables: Any) -> tuple[Any, dict]:
    """(params, state) of a variables mapping, with an error naming what was passed."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "variables must be the mapping returned by init_variables, with a 'params' "
            f"entry (and 'batch_stats' for ResNet18); got {type(variables).__name__}."
        )
    params, state = split_variables(variables)
    return dict(params), state


def check_x(x: Any) -> jax.Array:
    """x as an array of shape (N, ...) with N >= 1."""
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"x must be a batch of inputs of shape (N, ...) with N >= 1; got shape {x.shape}."
        )
    return x


def leaf_dtype(params: Any):
    """dtype of the first parameter leaf (float32 unless the model runs in float64)."""
    leaves = jax.tree_util.tree_leaves(params)
    return leaves[0].dtype if leaves else jnp.float32


def _tuple(v: Any, rank: int, default: int = 1) -> tuple[int, ...]:
    if v is None:
        return (default,) * rank
    if isinstance(v, int):
        return (v,) * rank
    return tuple(int(a) for a in v)


def is_conv(mod: nn.Module) -> bool:
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


def probe_sites(module: nn.Module, variables: Mapping, sample_shape, dtype) -> list[Site]:
    """Finds the Dense/Conv calls whose per-sample gradient can be built from (input, δ)."""
    calls: dict[tuple[str, ...], list] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and (
            type(context.module) is nn.Dense or is_conv(context.module)
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
            sites.append(Site("dense", path, in_shape[1:], out_shape[1:], bool(mod.use_bias)))
        elif is_conv(mod):
            geometry = _conv_geometry(mod, in_shape)
            if geometry is not None:
                sites.append(
                    Site("conv", path, in_shape[1:], out_shape[1:], bool(mod.use_bias), *geometry)
                )
    return sites


def analyse(
    module: nn.Module,
    variables: Mapping,
    sample_shape: tuple[int, ...] | None,
    dtype,
    method: str,
    dropped: Collection[LeafKey] = (),
) -> Structure:
    """Decides which layers get per-site treatment (only exact cases) for ``method``.

    Args:
        module, variables: the network and θ0.
        sample_shape: per-sample input shape; without it every 2-D ``kernel`` is taken as
            a Dense layer acting on vectors.
        dtype: dtype of the inputs.
        method: ``"structured"`` or ``"jacobian"`` (no sites).
        dropped: flattened keys of leaves with an identically zero per-sample gradient;
            they get no columns (a site keeps only if none of its leaves is dropped; a
            site with every leaf dropped disappears).
    """
    params, _ = check_variables(variables)
    flat = traverse_util.flatten_dict(params)
    dropped = frozenset(tuple(k) for k in dropped)
    unknown = dropped - set(flat)
    if unknown:
        raise ValueError(f"dropped keys {sorted(unknown)} are not parameters of the model.")
    n_params = int(sum(np.size(v) for v in flat.values()))
    sites: list[Site] = []
    if method == "structured":
        if sample_shape is not None:
            candidates = probe_sites(module, variables, sample_shape, dtype)
        else:
            candidates = [
                Site(
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
            owned = {k for k in flat if k[: len(s.path)] == s.path}
            if owned != s.param_keys:
                continue  # unexpected parameters under that path: leave to vmap(grad)
            if s.param_keys & dropped:
                continue  # (partly) dead: its live leaves, if any, go to vmap(grad)
            if s.kind == "dense" and (
                s.x_dim * s.d_out > s.x_dim + s.d_out + HADAMARD_OVERHEAD_COLUMNS
            ):
                s = Site("dense_factor", s.path, s.in_shape, s.out_shape, s.use_bias)
            sites.append(s)
    taken = set(dropped)
    for s in sites:
        taken |= s.param_keys
    rest_keys = tuple(k for k in flat if k not in taken)
    rest_dim = int(sum(np.size(flat[k]) for k in rest_keys))
    dropped_keys = tuple(k for k in flat if k in dropped)
    dropped_dim = int(sum(np.size(flat[k]) for k in dropped_keys))
    return Structure(tuple(sites), rest_keys, rest_dim, n_params, dropped_keys, dropped_dim)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown Gram method {method!r}; valid methods: {', '.join(METHODS)}.")


def resolve_method(method: str, structure_if_structured: Structure) -> str:
    """``"auto"`` → ``"structured"`` or ``"jacobian"`` for the given structured layout."""
    check_method(method)
    if method == "auto":
        # Structured pays off when a Dense layer is factorised or when no parameter is
        # left to the per-sample vmap(grad) (which costs as much as the jacobian path).
        st = structure_if_structured
        return "structured" if st.factor_sites or (st.sites and not st.rest_keys) else "jacobian"
    return method


def layout(
    module: nn.Module,
    variables: Mapping,
    sample_shape: tuple[int, ...] | None,
    method: str,
    dropped: Collection[LeafKey] = (),
) -> tuple[str, Structure]:
    """(resolved method, feature layout) for ``method`` (``auto`` resolved here)."""
    check_method(method)
    params, _ = check_variables(variables)
    dtype = leaf_dtype(params)
    structured = analyse(module, variables, sample_shape, dtype, "structured", dropped)
    resolved = resolve_method(method, structured)
    if resolved == "structured":
        return resolved, structured
    return resolved, analyse(module, variables, sample_shape, dtype, "jacobian", dropped)
