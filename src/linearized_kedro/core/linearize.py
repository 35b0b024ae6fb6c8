"""First-order Taylor models of a network around a parameter point (docs/methods.md §1.5).

Both are one forward-mode ``jax.jvp`` around the linearisation point with tangent
θ − θ_point, so they never materialise a Jacobian. ``f`` must be the network as a
"function of θ" with BatchNorm in inference mode (``models.scalar_apply``, docs/methods.md §1.3), which
freezes the BN statistics at the state passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

ScalarFn = Callable[[Any, jax.Array], jax.Array]


def _delta(params: Any, point: Any) -> Any:
    return jax.tree_util.tree_map(lambda p, q: p - q, params, point)


def linearize(f: ScalarFn, params0: Any) -> ScalarFn:
    """f_lin(θ, x) = f(θ0, x) + J(θ0, x)·(θ − θ0): "linear" training (docs/methods.md §1.5).

    Args:
        f: ``f(params, x (B, ...)) -> (B,)``.
        params0: the linearisation point θ0 (a pytree like ``params``).

    Returns:
        ``f_lin(params, x (B, ...)) -> (B,)``; equals ``f`` at θ0 and is affine in θ.
    """

    def f_lin(params: Any, x: jax.Array) -> jax.Array:
        value, tangent = jax.jvp(lambda p: f(p, x), (params0,), (_delta(params, params0),))
        return value + tangent

    return f_lin


def linearize_diff(f: ScalarFn, params_c: Any) -> ScalarFn:
    """f_diff(θ, x) = J(θc, x)·(θ − θc): the kernel without the function value (docs/methods.md §1.5, §3.5).

    Args:
        f: ``f(params, x (B, ...)) -> (B,)``.
        params_c: the linearisation point θc.

    Returns:
        ``f_diff(params, x (B, ...)) -> (B,)``; 0 at θc and linear in θ − θc.
    """

    def f_diff(params: Any, x: jax.Array) -> jax.Array:
        return jax.jvp(lambda p: f(p, x), (params_c,), (_delta(params, params_c),))[1]

    return f_diff
