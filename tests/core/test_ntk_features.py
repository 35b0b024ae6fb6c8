"""Per-sample features: host and device convolution rows, the flat Jacobian (docs/methods.md §1.4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from reference import TOLERANCES, explicit_jacobian, rel_err

from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables


def _conv_case(strides, padding, b=5, shape=(7, 6, 3), co=4, ks=(3, 2)):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((b, *shape)).astype(np.float32)
    pads = (
        lax.padtype_to_pads(shape[:2], ks, strides, padding)
        if isinstance(padding, str)
        else padding
    )
    ho = (shape[0] + sum(pads[0]) - ks[0]) // strides[0] + 1
    wo = (shape[1] + sum(pads[1]) - ks[1]) // strides[1] + 1
    d = rng.standard_normal((b, ho, wo, co)).astype(np.float32)
    site = ntk.Site("conv", ("c",), shape, (ho, wo, co), True, ks, strides, tuple(pads))
    # Independent reference: jax.grad of Σ δ_i · conv(x_i, W) wrt (W, bias), one sample at
    # a time, in float64.
    with jax.enable_x64(True):

        def inner(w, ui, di):
            y = lax.conv_general_dilated(
                ui[None], w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return jnp.sum(y[0] * di)

        w0 = jnp.zeros((*ks, shape[2], co), jnp.float64)
        u64, d64 = jnp.asarray(u, jnp.float64), jnp.asarray(d, jnp.float64)
        grads = [np.asarray(jax.grad(inner)(w0, u64[i], d64[i])) for i in range(b)]
    return site, u, d, np.stack(grads), d.astype(np.float64).sum(axis=(1, 2))


CASES = [((1, 1), "SAME"), ((2, 2), "SAME"), ((2, 1), ((0, 2), (1, 0)))]


@pytest.mark.parametrize("per_offset", [True, False])
@pytest.mark.parametrize(("strides", "padding"), CASES)
def test_host_conv_rows_match_per_sample_gradients(per_offset, strides, padding):
    site, u, d, kernel_grads, bias_grads = _conv_case(strides, padding)
    rows = ntk.conv_rows_host(site, u, d, chunk=2, per_offset=per_offset)  # chunk splits b=5
    ref = np.concatenate([kernel_grads.reshape(len(u), -1), bias_grads], axis=1)
    assert rows.shape == ref.shape
    np.testing.assert_allclose(rows, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize(("strides", "padding"), CASES)
def test_device_conv_rows_match_per_sample_gradients(strides, padding):
    site, u, d, kernel_grads, bias_grads = _conv_case(strides, padding)
    rows = np.asarray(jax.jit(lambda a, b: ntk.conv_rows_device(site, a, b))(u, d))
    # Device rows are in (C_in, kh, kw, C_out) order.
    ref = np.concatenate(
        [kernel_grads.transpose(0, 3, 1, 2, 4).reshape(len(u), -1), bias_grads], axis=1
    )
    assert rows.shape == ref.shape
    np.testing.assert_allclose(rows, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # Negative control: the host (kh, kw, C_in, C_out) order is a different layout.
    host_order = np.concatenate([kernel_grads.reshape(len(u), -1), bias_grads], axis=1)
    assert rel_err(rows, host_order) > 1e-2


def test_flat_jacobian_matches_reference():
    module = build_model({"name": "mlp", "features": (5, 4)})
    variables = init_variables(module, 0, (3, 3, 1))
    x = jax.random.normal(jax.random.key(1), (6, 3, 3, 1))
    J = np.asarray(ntk.flat_jacobian(module, variables, x), np.float64)
    ref = explicit_jacobian(module, variables, x)
    assert J.shape == ref.shape
    assert rel_err(J, ref) < TOLERANCES["float32"]
    assert rel_err(J[::-1], ref) > 1e-2  # negative control: rows belong to their samples


def test_threaded_conv_rows_equal_one_call():
    from linearized_kedro.core import sharding
    from linearized_kedro.core.ntk import features

    site = features.Site(
        path=("Conv_0",),
        kind="conv",
        in_shape=(12, 12, 3),
        out_shape=(12, 12, 6),
        kernel_size=(5, 5),
        strides=(1, 1),
        pads=((2, 2), (2, 2)),
        use_bias=True,
    )
    rng = np.random.default_rng(0)
    u = rng.standard_normal((200, 12, 12, 3)).astype(np.float32)
    d = rng.standard_normal((200, 12, 12, 6)).astype(np.float32)
    one = features.conv_rows_host(site, u, d)
    with sharding.host_blas_threads(2):
        assert sharding.granted_host_threads() == 2
        two = features._conv_rows_threaded(site, u, d)
    np.testing.assert_array_equal(two, one)
    with sharding.host_blas_threads(1):
        assert sharding.granted_host_threads() == 1
    # Negative control: rows of another sample order differ.
    assert not np.array_equal(features.conv_rows_host(site, u[::-1], d[::-1]), one)
