"""Tests of the convolution with hand-written derivative rules (core/layers.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linearized_kedro.core import layers, models
from linearized_kedro.core.layers import Conv, with_conv_autodiff

CONFIGS = [
    dict(features=4, kernel_size=(5, 5), padding="SAME"),
    dict(features=3, kernel_size=(3, 3), strides=(2, 2), padding="SAME", use_bias=False),
    dict(features=3, kernel_size=(1, 1), strides=(2, 2), use_bias=False),
    dict(features=2, kernel_size=(3, 2), strides=(2, 3), padding=((1, 0), (2, 1))),
]


def _tree_max_diff(a, b) -> float:
    return max(
        jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)
        )
    )


@pytest.mark.parametrize("cfg", CONFIGS)
def test_same_parameters_and_outputs_as_flax_conv(cfg):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    ours, ref = Conv(**cfg), nn.Conv(**cfg)
    v_ours, v_ref = ours.init(jax.random.key(3), x), ref.init(jax.random.key(3), x)
    assert jax.tree_util.tree_structure(v_ours) == jax.tree_util.tree_structure(v_ref)
    for a, b in zip(
        jax.tree_util.tree_leaves(v_ours), jax.tree_util.tree_leaves(v_ref), strict=True
    ):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for mode in layers.CONV_MODES:
        out = Conv(**cfg, conv_autodiff=mode).apply(v_ours, x)
        np.testing.assert_allclose(out, ref.apply(v_ref, x), rtol=0, atol=1e-6)


def test_model_init_bit_identical_to_flax_conv(monkeypatch):
    lenet = {"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)}
    resnet = {"name": "resnet18", "stage_sizes": (1, 1), "num_filters": 4}
    ours = models.init_variables(models.build_model(lenet), 7, (8, 8, 3))
    ours_resnet = jax.eval_shape(
        lambda: models.init_variables(models.build_model(resnet), 7, (8, 8, 3))
    )

    def flax_conv(*args, conv_autodiff="lax", **kwargs):
        del conv_autodiff  # flax.linen.Conv has only XLA's derivatives
        return nn.Conv(*args, **kwargs)

    monkeypatch.setattr(models.lenet, "Conv", flax_conv)
    monkeypatch.setattr(models.resnet, "Conv", flax_conv)
    ref = models.init_variables(models.build_model(lenet), 7, (8, 8, 3))
    ref_resnet = jax.eval_shape(
        lambda: models.init_variables(models.build_model(resnet), 7, (8, 8, 3))
    )
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    # ResNet18: same parameter names, shapes and dtypes (values: the per-layer test above).
    assert ours_resnet == ref_resnet


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fast_vjp_matches_autodiff_in_float64(cfg):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (2, 9, 8, 3), jnp.float64)
        conv = Conv(**cfg)
        v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), conv.init(jax.random.key(2), x))

        def loss(conv, v, x):
            y = conv.apply(v, x)
            return jnp.sum(jnp.sin(y) * jnp.arange(1.0, 1.0 + y.size).reshape(y.shape))

        grad = jax.jit(jax.grad(loss, (1, 2)), static_argnums=0)
        ref = grad(conv, v, x)  # lax autodiff: the reference
        got = grad(Conv(**cfg, conv_autodiff="vjp"), v, x)
        assert _tree_max_diff(ref, got) < 1e-11


def test_linearized_mode_grad_of_jvp_matches_autodiff():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3), jnp.float64)
        conv = Conv(**CONFIGS[1])
        v0 = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64), conv.init(jax.random.key(2), x)
        )
        v1 = jax.tree_util.tree_map(lambda a: 1.3 * a + 0.1, v0)

        def tangent_loss(v, conv):
            delta = jax.tree_util.tree_map(jnp.subtract, v, v0)
            value, tan = jax.jvp(lambda w: jnp.tanh(conv.apply(w, x)), (v0,), (delta,))
            return jnp.sum(jnp.cos(value + tan))

        value_and_grad = jax.jit(jax.value_and_grad(tangent_loss), static_argnums=1)
        ref_val, ref_grad = value_and_grad(v1, conv)
        val, grad = value_and_grad(v1, Conv(**CONFIGS[1], conv_autodiff="linearized"))
        np.testing.assert_allclose(val, ref_val, rtol=1e-13)
        assert _tree_max_diff(ref_grad, grad) < 1e-11


def test_vjp_mode_is_reverse_only_and_bad_mode_raises():
    x = jnp.ones((1, 4, 4, 1))
    v = Conv(2, (3, 3)).init(jax.random.key(0), x)
    jax.jvp(lambda w: Conv(2, (3, 3)).apply(w, x), (v,), (v,))  # lax: forward mode works
    with pytest.raises(TypeError):
        jax.jvp(lambda w: Conv(2, (3, 3), conv_autodiff="vjp").apply(w, x), (v,), (v,))
    with pytest.raises(ValueError, match="Valid modes"):
        Conv(2, (3, 3), conv_autodiff="fast").apply(v, x)
    with pytest.raises(ValueError, match="Valid modes"):
        with_conv_autodiff(models.build_model("lenet"), "fast")


def test_rule_is_part_of_the_jit_key_and_gives_equal_numbers():
    """Two rules: two compiled programs (a different backward pass), the same gradients."""
    lenet = models.build_model({"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)})
    by_rule = {mode: with_conv_autodiff(lenet, mode) for mode in ("lax", "vjp")}
    assert by_rule["lax"] is lenet and by_rule["vjp"].conv_autodiff == "vjp"
    assert by_rule["lax"] != by_rule["vjp"] and hash(by_rule["lax"]) != hash(by_rule["vjp"])
    variables = models.init_variables(lenet, 0, (8, 8, 3))
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
    traces = []

    def loss(module, params, x):
        traces.append(module.conv_autodiff)
        return jnp.sum(jnp.tanh(module.apply({"params": params}, x)))

    grad = jax.jit(jax.grad(loss, argnums=1), static_argnums=0)
    grads = {mode: grad(m, variables["params"], x) for mode, m in by_rule.items()}
    grad(with_conv_autodiff(lenet, "vjp"), variables["params"], x)  # an equal module: cached
    assert traces == ["lax", "vjp"]
    assert _tree_max_diff(grads["lax"], grads["vjp"]) < 1e-5
    # The programs differ: only the hand-written rule puts optimisation barriers in.
    hlo = {m: grad.lower(by_rule[m], variables["params"], x).as_text() for m in by_rule}
    assert "optimization_barrier" in hlo["vjp"] and "optimization_barrier" not in hlo["lax"]
    # A model without convolutions has no rule to set.
    mlp = models.build_model({"name": "mlp", "features": (4,)})
    assert with_conv_autodiff(mlp, "vjp") is mlp


def test_output_channels_padded_for_xla_cpu_give_identical_numbers():
    # XLA:CPU convolutions with 6 output channels run on a kernel padded to 8 (core/
    # layers.py): the outputs must be exactly those of the unpadded convolution
    # (lax.conv_general_dilated on the 6-channel kernel), the gradients equal to rounding.
    x = jax.random.normal(jax.random.key(0), (4, 10, 10, 3))
    k = jax.random.normal(jax.random.key(1), (5, 5, 3, 6))
    pads = ((2, 2), (2, 2))

    def plain(x, k):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    y = layers._conv(x, k, (1, 1), pads)
    assert y.shape == (4, 10, 10, 6)
    np.testing.assert_array_equal(y, plain(x, k))
    g_ours = jax.grad(lambda a, b: jnp.sum(jnp.sin(layers._conv(a, b, (1, 1), pads))), (0, 1))(x, k)
    g_ref = jax.grad(lambda a, b: jnp.sum(jnp.sin(plain(a, b))), (0, 1))(x, k)
    # Gradients: XLA may sum the transposed convolutions in another order (float32
    # rounding of sums of ~150 terms, ~1e-6 of their scale).
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))
    # The comparison is sharp enough to see a one-channel change of the kernel.
    k2 = k.at[..., 5].add(1e-3)
    assert np.abs(np.asarray(layers._conv(x, k2, (1, 1), pads) - y)).max() > 1e-4
