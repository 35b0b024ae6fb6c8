"""Identities of the linearised models (docs/methods.md §1.5) against explicit float64 Jacobians."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from linearized_kedro.core.layers import with_conv_autodiff
from linearized_kedro.core.linearize import linearize, linearize_diff
from linearized_kedro.core.models import build_model, init_variables, scalar_apply

CONFIGS = {
    "mlp": {"name": "mlp", "features": (6, 5), "activation": "gelu"},
    "lenet": {"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)},
}


def _setup64(name, conv_autodiff="lax"):
    """Float64 network f, θ0, a direction Δ and inputs (inside an x64 context)."""
    module = with_conv_autodiff(build_model(CONFIGS[name]), conv_autodiff)
    variables = init_variables(module, 0, (8, 8, 3))
    params0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables["params"])
    f = jax.jit(scalar_apply(module, {}))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 3), jnp.float64)
    leaves, treedef = jax.tree_util.tree_flatten(params0)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    delta = jax.tree_util.tree_unflatten(
        treedef,
        [0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)],
    )
    return f, params0, delta, x


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_linearize_equals_explicit_taylor_model(name):
    with jax.enable_x64(True):
        f, params0, delta, x = _setup64(name)
        flat0, unravel = ravel_pytree(params0)
        jac = jax.jit(jax.jacrev(lambda flat, x: f(unravel(flat), x)))(flat0, x)  # (B, P)
        f_lin = jax.jit(linearize(f, params0))
        np.testing.assert_allclose(f_lin(params0, x), f(params0, x), rtol=1e-13, atol=1e-13)
        theta = _axpy(1.0, delta, params0)
        expected = f(params0, x) + jac @ ravel_pytree(delta)[0]
        np.testing.assert_allclose(f_lin(theta, x), expected, rtol=1e-11, atol=1e-12)
        # Exactly affine along any line θ0 + aΔ.
        base, step = f_lin(params0, x), f_lin(theta, x) - f_lin(params0, x)
        for a in (-1.5, 0.5, 3.0):
            np.testing.assert_allclose(
                f_lin(_axpy(a, delta, params0), x), base + a * step, rtol=1e-11, atol=1e-12
            )
        # The network itself is not affine: the test could fail.
        assert not np.allclose(
            f(_axpy(3.0, delta, params0), x), f(params0, x) + 3.0 * (f(theta, x) - f(params0, x))
        )


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_gradient_of_linear_model_is_constant_and_equals_jacobian(name):
    with jax.enable_x64(True):
        f, params0, delta, x = _setup64(name)
        flat0, unravel = ravel_pytree(params0)
        jac = jax.jit(jax.jacrev(lambda flat, x: f(unravel(flat), x)))(flat0, x)
        w = jnp.linspace(-1.0, 1.0, x.shape[0])
        for mode in ("lax", "linearized"):
            f_mode = _setup64(name, mode)[0]
            f_lin = linearize(f_mode, params0)
            grad = jax.jit(jax.grad(lambda p, f_lin=f_lin: jnp.sum(w * f_lin(p, x))))
            for theta in (params0, _axpy(2.0, delta, params0)):
                got = ravel_pytree(grad(theta))[0]
                np.testing.assert_allclose(got, w @ jac, rtol=1e-10, atol=1e-12)


def test_linearize_diff_zero_at_point_and_offset_free():
    with jax.enable_x64(True):
        f, params_c, delta, x = _setup64("lenet")
        f_diff = jax.jit(linearize_diff(f, params_c))
        f_lin = linearize(f, params_c)
        np.testing.assert_array_equal(f_diff(params_c, x), np.zeros(x.shape[0]))
        theta = _axpy(1.0, delta, params_c)
        np.testing.assert_allclose(
            f_diff(theta, x), f_lin(theta, x) - f(params_c, x), rtol=1e-11, atol=1e-12
        )
        np.testing.assert_allclose(
            f_diff(_axpy(2.0, delta, params_c), x), 2 * f_diff(theta, x), rtol=1e-11, atol=1e-12
        )
