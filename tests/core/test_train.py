"""Tests of the training engine (SPEC §1.5, §1.6, §4 items 8, 9, 15)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from linearized_kedro.core import train as train_mod
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.train import (
    TrainConfig,
    make_optimizer,
    make_schedule,
    steps_per_epoch,
    train_model,
    train_sweep,
)

MLP = {"name": "mlp", "features": (8, 8)}


@pytest.fixture(scope="module")
def data():
    """37 train (not a multiple of the batch 16) and 21 test images of 8x8x3."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(58, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0).astype(np.float32)
    return x[:37], y[:37], x[37:], y[37:]


@pytest.fixture(scope="module")
def mlp():
    module = build_model(MLP)
    return module, init_variables(module, 0, (8, 8, 3))


def test_schedules_match_spec_values():
    cyclic = make_schedule("cyclic", 0.05, 1000)
    expected = {
        0: 5e-10,
        200: 0.025,
        400: 0.05,
        600: 0.03333,
        999: 8.33e-5,
        1000: 5e-10,
        2000: 5e-10,
    }
    for step, value in expected.items():
        np.testing.assert_allclose(float(cyclic(step)), value, rtol=2e-3)
    linear = make_schedule("linear", 0.05, 1000)
    for step, value in {0: 0.05, 250: 0.0375, 999: 0.05 / 1000, 1000: 0.0, 1200: 0.0}.items():
        np.testing.assert_allclose(float(linear(step)), value, rtol=1e-5, atol=1e-9)
    assert float(make_schedule("fixed", 0.05, 10)(123)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="piecewise"):
        make_schedule("piecewise", 0.05, 10)
    with pytest.raises(ValueError, match="Valid schedules"):
        make_schedule("cosine", 0.05, 10)


def test_config_defaults_and_validation():
    assert TrainConfig() == TrainConfig(100, 0.05, "linear", 0.9, 128, "sgd")
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(ValueError, match="Unknown keys"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="piecewise"):
        TrainConfig(lr_schedule="piecewise")
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="epoch_mode"):
        TrainConfig(epoch_mode="fast")
    assert steps_per_epoch(37, 16) == 3 and steps_per_epoch(32, 16) == 2


def test_sgd_is_heavy_ball_with_the_schedule():
    """Optax SGD against m = g + μ m; θ ← θ − lr_t m on a quadratic, in float64 NumPy."""
    a = np.array([[3.0, 0.5], [0.5, 1.0]])
    cfg = TrainConfig(max_lr=0.1, momentum=0.9, lr_schedule="linear")
    total = 6
    opt = make_optimizer(cfg, total)
    theta = jnp.array([1.0, -2.0])
    state = opt.init(theta)
    ref, m = np.array([1.0, -2.0]), np.zeros(2)
    for t in range(total):
        updates, state = opt.update(a @ theta, state, theta)
        theta = optax.apply_updates(theta, updates)
        m = a @ ref + 0.9 * m
        ref = ref - 0.1 * (1 - t / total) * m
    np.testing.assert_allclose(theta, ref, rtol=1e-6, atol=1e-6)
    # Adam is also accepted.
    assert make_optimizer(TrainConfig(optimizer="adam"), 10) is not None


def _reference_epoch64(module, params, x, y, key, cfg, epochs_total):
    """One epoch with masked last batch, written as a plain loop in float64."""
    n, b = x.shape[0], cfg.batch_size
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n))
    total = epochs_total * steps_per_epoch(n, b)

    def loss(p, xb, yb):
        logits = module.apply({"params": p}, xb)[:, 0]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yb))

    grad = jax.jit(jax.grad(loss))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t, start in enumerate(range(0, n, b)):
        rows = perm[start : start + b]
        g = grad(params, x[rows], y[rows])
        m = jax.tree_util.tree_map(lambda gi, mi: gi + cfg.momentum * mi, g, m)
        lr = cfg.max_lr * (1 - t / total)
        params = jax.tree_util.tree_map(lambda p, mi, lr=lr: p - lr * mi, params, m)
    return params


def test_epoch_masks_last_batch_and_matches_float64_loop(data, mlp, monkeypatch):
    """37 samples, batch 16: steps of 16, 16 and 5 samples; 21 test samples in padded batches."""
    module, variables = mlp
    x, y, xt, yt = data
    monkeypatch.setattr(train_mod, "EVAL_BATCH_SIZE", 8)
    cfg = TrainConfig(epochs=1, batch_size=16, max_lr=0.5)
    result = train_model(module, variables, "network", x, y, xt, yt, cfg, 3)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables["params"])
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        ref = _reference_epoch64(module, p64, x64, y64, jax.random.key(3), cfg, 1)
        logits = module.apply({"params": ref}, xt.astype(np.float64))[:, 0]
        test_loss = float(jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yt)))
        test_acc = float(np.mean((np.asarray(logits) > 0) == (yt > 0.5)))
    for a, b in zip(
        jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(ref), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.history["test_loss"][0], test_loss, rtol=1e-4)
    np.testing.assert_allclose(result.history["test_accuracy"][0], test_acc)
    assert set(result.history) == set(train_mod.HISTORY_KEYS)
    h = result.history
    np.testing.assert_allclose(h["param_distance"] ** 2, h["param_distance_squared"], rtol=1e-5)
    assert not result.diverged and result.final["epochs_completed"] == 1


def test_train_metrics_are_epoch_averages_over_every_sample(data, mlp):
    """With a negligible learning rate, the epoch's train loss is the mean BCE at θ0."""
    module, variables = mlp
    x, y, xt, yt = data
    cfg = TrainConfig(epochs=1, batch_size=16, max_lr=1e-12, lr_schedule="fixed")
    result = train_model(module, variables, "network", x, y, xt, yt, cfg, 0)
    logits = np.asarray(module.apply(variables, x)[:, 0], np.float64)
    losses = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    np.testing.assert_allclose(result.history["train_loss"][0], losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        result.history["train_accuracy"][0], np.mean((logits > 0) == (y > 0.5)), rtol=1e-6
    )


def _assert_results_close(a, b, rtol=1e-5, atol=1e-6):
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=rtol, atol=atol, err_msg=k)
    for u, v in zip(
        jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_sweep_strategies_agree_with_sequential(data, mlp):
    """vmap (scan epochs) and chunked (loop epochs) sweeps == tasks one at a time."""
    module, variables = mlp
    x, y, xt, yt = data
    ys = np.stack([y, 1 - y, y[::-1].copy(), 1 - y[::-1]])
    yts = np.stack([yt, 1 - yt, yt, 1 - yt])
    cfg = TrainConfig(epochs=2, batch_size=16, max_lr=0.2)
    loop = TrainConfig(epochs=2, batch_size=16, max_lr=0.2, epoch_mode="loop")
    keys = [0, 1, 2, 3]
    sequential = train_sweep(
        module, variables, "linear", x, ys, xt, yts, cfg, keys, strategy="sequential"
    )
    others = {
        "vmap": train_sweep(
            module, variables, "linear", x, ys, xt, yts, cfg, keys, strategy="vmap"
        ),
        "chunked": train_sweep(
            module,
            variables,
            "linear",
            x,
            ys,
            xt,
            yts,
            loop,
            keys,
            strategy="chunked",
            chunk_size=2,
        ),
    }
    for runs in others.values():
        for a, b in zip(sequential, runs, strict=True):
            _assert_results_close(a, b, rtol=2e-5, atol=1e-6)
    # Tasks really differ, and a single train_model reproduces task 1.
    assert not np.allclose(sequential[0].history["train_loss"], sequential[1].history["train_loss"])
    single = train_model(module, variables, "linear", x, ys[1], xt, yts[1], cfg, 1)
    np.testing.assert_allclose(
        single.history["train_loss"], others["vmap"][1].history["train_loss"], rtol=2e-5
    )
    assert train_mod.resolve_strategy("auto", variables["params"]) == "sequential"  # CPU
    assert train_mod.resolve_epoch_mode("auto", variables["params"]) == "scan"


def test_determinism_and_key_dependence(data, mlp):
    module, variables = mlp
    x, y, xt, yt = data
    cfg = TrainConfig(epochs=1, batch_size=16)
    a = train_model(module, variables, "network", x, y, xt, yt, cfg, 5)
    b = train_model(module, variables, "network", x, y, xt, yt, cfg, jax.random.key(5))
    c = train_model(module, variables, "network", x, y, xt, yt, cfg, 6)
    for u, v in zip(
        jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True
    ):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(
        jax.tree_util.tree_leaves(a.params)[0], jax.tree_util.tree_leaves(c.params)[0]
    )


@pytest.mark.parametrize("epoch_mode", ["scan", "loop"])
def test_huge_learning_rate_is_reported_as_diverged(data, mlp, epoch_mode):
    module, variables = mlp
    x, y, xt, yt = data
    cfg = TrainConfig(
        epochs=3, batch_size=16, max_lr=1e30, lr_schedule="fixed", epoch_mode=epoch_mode
    )
    result = train_model(module, variables, "network", x, y, xt, yt, cfg, 0)
    assert result.diverged
    assert result.final["epochs_completed"] < 3
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(result.params))


def test_resnet_batchnorm_updates_for_network_and_is_frozen_for_linear(data):
    module = build_model({"name": "resnet18", "stage_sizes": (1,), "num_filters": 4})
    variables = init_variables(module, 0, (8, 8, 3))
    x, y, xt, yt = data
    cfg = TrainConfig(epochs=1, batch_size=16)
    stats0 = jax.tree_util.tree_leaves(variables["batch_stats"])
    net = train_model(module, variables, "network", x[:20], y[:20], xt[:5], yt[:5], cfg, 0)
    lin = train_model(module, variables, "linear", x[:20], y[:20], xt[:5], yt[:5], cfg, 0)
    assert np.isfinite(net.final["test_loss"]) and np.isfinite(lin.final["test_loss"])
    changed = [
        not np.allclose(a, b)
        for a, b in zip(stats0, jax.tree_util.tree_leaves(net.state["batch_stats"]), strict=True)
    ]
    assert all(changed)
    for a, b in zip(stats0, jax.tree_util.tree_leaves(lin.state["batch_stats"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert lin.history["param_distance"][0] > 0


def test_linear_diff_starts_at_zero_output_from_linearization_point(data, mlp):
    module, variables = mlp
    x, y, xt, yt = data
    point = {"params": jax.tree_util.tree_map(lambda a: a * 1.1, variables["params"])}
    cfg = TrainConfig(epochs=1, batch_size=16, max_lr=1e-12, lr_schedule="fixed")
    result = train_model(
        module, variables, "linear_diff", x, y, xt, yt, cfg, 0, linearization_point=point
    )
    # Output 0 everywhere: BCE = log 2 and logit 0 is class 0.
    np.testing.assert_allclose(result.history["test_loss"][0], np.log(2.0), rtol=1e-5)
    assert result.history["param_distance"][0] < 1e-6


def test_bad_inputs_raise_clear_errors(data, mlp):
    module, variables = mlp
    x, y, xt, yt = data
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="Valid kinds"):
        train_model(module, variables, "kernel", x, y, xt, yt, cfg, 0)
    with pytest.raises(ValueError, match="labels"):
        train_model(module, variables, "network", x, y[:-1], xt, yt, cfg, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_model(module, variables, "network", x, 2 * y, xt, yt, cfg, 0)
    with pytest.raises(ValueError, match="strategy"):
        train_sweep(
            module, variables, "network", x, y[None], xt, yt[None], cfg, [0], strategy="pmap"
        )


def test_loop_and_scan_epochs_agree_on_tiny_lenet(data):
    """Same keys, same numbers whether an epoch is one scan or a loop of donated steps.

    The two modes also differentiate the convolutions differently (hand-written rules under
    scan, XLA's under the loop), so this checks those rules too. Differences are float32
    rounding only (summation order).
    """
    module = build_model({"name": "lenet", "conv_features": (2, 4), "dense_features": (8, 4)})
    variables = init_variables(module, 0, (8, 8, 3))
    x, y, xt, yt = data
    assert train_mod.resolve_epoch_mode("auto", variables["params"]) == "scan"
    scan = TrainConfig(epochs=2, batch_size=16, max_lr=0.2, epoch_mode="scan")
    loop = TrainConfig(epochs=2, batch_size=16, max_lr=0.2, epoch_mode="loop")
    for kind in ("network", "linear"):
        by_scan = train_model(module, variables, kind, x, y, xt, yt, scan, 5)
        by_loop = train_model(module, variables, kind, x, y, xt, yt, loop, 5)
        _assert_results_close(by_scan, by_loop)
        assert by_loop.history["param_distance"][-1] > 1e-3  # it trained
    # The loop donates only its own buffers, never the caller's.
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(variables))
