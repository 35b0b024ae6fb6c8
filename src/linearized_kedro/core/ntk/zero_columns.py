"""Parameter leaves whose per-sample gradient is exactly zero on every sample (#11 §2).

With the zero-initialised last BatchNorm scale of every residual block (docs/methods.md §1.2), the
cotangent flowing back into a residual branch is γ·(...) = 0 exactly at θ0, so every
parameter inside the branch (both convolutions, the first BatchNorm) has an identically
zero gradient for every input: 98 % of ResNet18's Jacobian columns are exact zeros, and
they contribute exactly nothing to K = J Jᵀ. Leaving them out is exact; guessing them
would not be, so they are determined, never assumed:

One batched forward/backward pass over all N samples adds a zero perturbation to the
output of every call of every parameter-owning layer of a known class (``CLOSED_LAYERS``:
Dense, Conv, BatchNorm, LayerNorm, GroupNorm; these use only their own parameters and
influence f only through what they return) and reads the cotangents δ_n = ∂f(x_n)/∂out_n
(BatchNorm in inference mode, so samples are independent). A layer's per-sample parameter
gradient is a sum of products with δ_n (∂f/∂W = Σ patch ⊗ δ, ∂f/∂γ = Σ x̂ ⊙ δ, ...), so if
max_n,calls |δ_n| is exactly 0.0 every per-sample gradient of its parameters is exactly 0
and Σ_n ‖∂f(x_n)/∂θ_leaf‖² = 0. Those leaves are dropped; every other leaf is kept (a
leaf of another layer class, or of a layer with any non-zero or non-finite cotangent, or
with an output that is not one array). The maximum is exact: no sum of squares that
could underflow.

Cost: one batched forward and backward pass (no per-sample weight gradients), about a
third of one feature pass. It is skipped when θ0 has no all-zero leaf other than biases
(MLP, LeNet): then no layer's cotangent is forced to zero by the weights, and skipping can
only keep columns, never drop one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ..layers import Conv as ProjectConv
from ..models import scalar_apply
from .structure import LeafKey, check_variables, check_x, leaf_dtype

# Exact classes (a subclass could use its parameters elsewhere).
CLOSED_LAYERS = (
    nn.Dense,
    nn.Conv,
    ProjectConv,
    nn.BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)

RULE = (
    "a leaf is dropped when it belongs to a Dense/Conv/BatchNorm/LayerNorm/GroupNorm layer "
    "whose output cotangent ∂f(x_n)/∂output is exactly 0.0 for every sample n and every call "
    "(max |δ| over all N samples, one batched backward pass, BN in inference mode); its "
    "per-sample gradients are then sums of products with 0 and Σ_n ‖∂f(x_n)/∂θ_leaf‖² = 0"
)


@dataclass(frozen=True)
class ZeroColumns:
    """Which parameter leaves have an identically zero per-sample gradient.

    Attributes:
        dropped: flattened keys of the dropped leaves (``Structure.dropped_keys``).
        n_params: P, all scalar parameters.
        dropped_params: scalar parameters in the dropped leaves.
        n_samples: N, the samples checked.
        layers: ``{"a/b": {"calls": c, "max_abs_cotangent": m, "leaves": [...],
            "dropped": bool}}`` for every parameter-owning layer checked; a layer that
            cannot be checked (other class, output not one array) has m = None.
        checked: False when the pass was skipped (``may_have_zero_columns``).
    """

    dropped: tuple[LeafKey, ...]
    n_params: int
    dropped_params: int
    n_samples: int
    layers: dict[str, dict] = field(default_factory=dict)
    checked: bool = True

    def report(self) -> dict[str, Any]:
        """The JSON-friendly record stored in the spectrum report."""
        return {
            "rule": RULE,
            "checked": self.checked,
            "checked_samples": self.n_samples if self.checked else 0,
            "n_params": self.n_params,
            "dropped_params": self.dropped_params,
            "kept_params": self.n_params - self.dropped_params,
            "dropped_fraction": self.dropped_params / max(1, self.n_params),
            "dropped_leaves": ["/".join(k) for k in self.dropped],
            "layers": self.layers,
        }


def _owned_leaves(flat: Mapping[LeafKey, Any]) -> dict[tuple[str, ...], list[LeafKey]]:
    owners: dict[tuple[str, ...], list[LeafKey]] = {}
    for key in flat:
        owners.setdefault(tuple(key[:-1]), []).append(key)
    return owners


def _probe(module: nn.Module, variables: Mapping, sample_shape, dtype) -> dict:
    """path -> list of (closed, output shape) per call, for every intercepted layer call."""
    calls: dict[tuple[str, ...], list] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "setup":
            return out
        path = tuple(context.module.path)
        closed = type(context.module) in CLOSED_LAYERS
        ok = (
            closed
            and isinstance(out, jax.Array | jax.ShapeDtypeStruct)
            and jnp.issubdtype(out.dtype, jnp.floating)
            and out.ndim >= 1
            and out.shape[0] == 1
        )
        calls.setdefault(path, []).append((ok, tuple(out.shape) if ok else None))
        return out

    def run(v, x):
        with nn.intercept_methods(interceptor):
            return module.apply(v, x, train=False)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct((1, *sample_shape), dtype))
    return calls


@functools.lru_cache(maxsize=16)
def _compiled_cotangents(module: nn.Module, checked: tuple, dtype: str):
    """Jitted (params, state, x) -> {path: (b,) max over calls of |δ_n|}."""
    shapes = dict(checked)

    @jax.jit
    def run(params, state, x):
        b = x.shape[0]
        perts = {
            path: [jnp.zeros((b, *shape[1:]), dtype) for shape in out_shapes]
            for path, out_shapes in shapes.items()
        }

        def total(pt):
            seen = {path: 0 for path in pt}

            def interceptor(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                path = tuple(context.module.path)
                if context.method_name != "setup" and path in pt:
                    out = out + pt[path][seen[path]]
                    seen[path] += 1
                return out

            with nn.intercept_methods(interceptor):
                return scalar_apply(module, state)(params, x).sum()

        with jax.default_matmul_precision("highest"):
            grads = jax.grad(total)(perts)
        return {
            path: jnp.max(jnp.stack([jnp.abs(g).reshape(b, -1).max(axis=1) for g in gs]), axis=0)
            for path, gs in grads.items()
        }

    return run


def may_have_zero_columns(params: Any) -> bool:
    """Whether θ0 has an all-zero leaf other than a bias (a zero weight or scale).

    Without one, no layer's output cotangent is forced to be exactly zero by the weights
    (only by a pathological activation pattern), so the check would find nothing.
    """
    flat = traverse_util.flatten_dict(dict(params))
    return any(key[-1] != "bias" and not np.any(np.asarray(v)) for key, v in flat.items())


def find_zero_columns(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    *,
    block_size: int = 256,
    screen: bool = True,
) -> ZeroColumns:
    """Finds the parameter leaves with an identically zero per-sample gradient on ``x``.

    Args:
        module: a Flax module with ``apply(variables, x, train=False) -> (B, 1)``.
        variables: ``{'params': θ0, ['batch_stats': ...]}``.
        x: (N, ...) every sample of the Gram (the check is over all of them).
        block_size: samples per batched pass (memory only; the result does not depend on
            it).
        screen: skip the pass when ``may_have_zero_columns`` is False (nothing dropped).

    Returns:
        ``ZeroColumns``; ``dropped`` is empty when nothing is provably zero (e.g. a
        ResNet18 whose zero-initialised BN scales were changed).
    """
    x = check_x(x)
    params, state = check_variables(variables)
    flat = traverse_util.flatten_dict(params)
    n_params = int(sum(np.size(v) for v in flat.values()))
    if screen and not may_have_zero_columns(params):
        return ZeroColumns((), n_params, 0, int(x.shape[0]), {}, checked=False)
    owners = _owned_leaves(flat)
    dtype = leaf_dtype(params)
    calls = _probe(module, variables, tuple(x.shape[1:]), x.dtype)
    # Layers that can be checked: every call closed (known class, one float array out).
    checked = tuple(
        (path, tuple(shape for _, shape in uses))
        for path, uses in calls.items()
        if path in owners and all(ok for ok, _ in uses)
    )
    n = int(x.shape[0])
    b = max(1, min(int(block_size), n))
    maxima = {path: 0.0 for path, _ in checked}
    if checked:
        run = _compiled_cotangents(module, checked, jnp.dtype(dtype).name)
        for lo in range(0, n, b):
            hi = min(n, lo + b)
            xb = x[lo:hi]
            if hi - lo < b:  # one compiled shape: pad, then ignore the padded rows
                xb = jnp.concatenate([xb, jnp.zeros((b - (hi - lo), *x.shape[1:]), x.dtype)])
            out = run(params, state, xb)
            for path, per_sample in out.items():
                m = float(np.max(np.asarray(per_sample)[: hi - lo]))
                # NaN is kept (a NaN cotangent proves nothing); it never compares as 0.0.
                maxima[path] = m if np.isnan(m) or np.isnan(maxima[path]) else max(maxima[path], m)
    dropped: list[LeafKey] = []
    layers: dict[str, dict] = {}
    for path, leaves in owners.items():
        uses = calls.get(path, [])
        # Unchecked layers (other classes, unusual outputs, never called) are kept.
        m = maxima.get(path)
        dead = m == 0.0
        if dead:
            dropped += leaves
        layers["/".join(path) or "<root>"] = {
            "calls": len(uses),
            "max_abs_cotangent": m,
            "leaves": ["/".join(k[len(path) :]) for k in leaves],
            "dropped": dead,
        }
    order = {k: i for i, k in enumerate(flat)}
    dropped.sort(key=order.__getitem__)
    return ZeroColumns(
        dropped=tuple(dropped),
        n_params=n_params,
        dropped_params=int(sum(np.size(flat[k]) for k in dropped)),
        n_samples=n,
        layers=layers,
    )
