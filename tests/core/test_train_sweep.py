"""Runs and sweeps (core/train/sweep.py): strategies, shared batch order, per-task inputs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from linearized_kedro.core import train as train_mod
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.train import TrainConfig, train_model, train_sweep
from linearized_kedro.core.train.epoch import TRACES

LENET = {"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)}


def _tasks(y, yt):
    """Four label sets: the labels, their flip, and both reversed."""
    ys = np.stack([y, 1 - y, y[::-1].copy(), 1 - y[::-1]])
    yts = np.stack([yt, 1 - yt, yt, 1 - yt])
    return ys, yts


def _assert_results_close(a, b, rtol=2e-5, atol=1e-6):
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=rtol, atol=atol, err_msg=k)
    for u, v in zip(
        jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def _programs(cfg):
    return {program for (_, program), n in TRACES.items() if program.cfg == cfg}


def test_sweep_strategies_agree_with_sequential(train_data, train_mlp):
    """vmap (scan epochs) and chunked (loop epochs) sweeps == tasks one at a time."""
    module, variables = train_mlp
    x, y, xt, yt = train_data
    ys, yts = _tasks(y, yt)
    cfg = TrainConfig(epochs=2, batch_size=16, max_lr=0.2)
    loop = cfg.replace(epoch_mode="loop")
    keys = [0, 1, 2, 3]
    args = (module, variables, "linear", x, ys, xt, yts)
    sequential = train_sweep(*args, cfg, keys, strategy="sequential")
    vmap = train_sweep(*args, cfg, keys, strategy="vmap")
    chunked = train_sweep(*args, loop, keys, strategy="chunked", chunk_size=3)  # groups 3 + 1
    for runs in (vmap, chunked):
        for a, b in zip(sequential, runs, strict=True):
            _assert_results_close(a, b)
    # Tasks really differ, and a single train_model reproduces task 1.
    assert not np.allclose(sequential[0].history["train_loss"], sequential[1].history["train_loss"])
    single = train_model(module, variables, "linear", x, ys[1], xt, yts[1], cfg, 1)
    _assert_results_close(single, vmap[1])
    assert train_mod.resolve_strategy("auto", variables["params"]) == "sequential"  # CPU


def test_shared_key_draws_one_batch_order_for_all_vmapped_tasks(train_data):
    """The eigenfunction sweeps' case: one key for every task (docs/methods.md §3.2)."""
    module = build_model(LENET)
    variables = init_variables(module, 0, (8, 8, 3))
    x, y, xt, yt = train_data
    ys, yts = _tasks(y, yt)
    cfg = TrainConfig(epochs=2, batch_size=16, max_lr=0.3, momentum=0.5)
    args = (module, variables, "linear", x, ys, xt, yts, cfg)
    vmap = train_sweep(*args, [7] * 4, strategy="vmap")
    shared = [p for p in _programs(cfg) if p.vmapped]
    assert len(shared) == 1 and shared[0].shared_order and shared[0].shared_inputs
    sequential = train_sweep(*args, [7] * 4, strategy="sequential")
    for a, b in zip(sequential, vmap, strict=True):
        _assert_results_close(a, b)
    # Negative control: with their own keys, the tasks train on other batch orders.
    own = train_sweep(*args, [7, 8, 9, 10], strategy="vmap")
    assert not np.allclose(own[1].history["train_loss"], vmap[1].history["train_loss"])
    assert any(p.vmapped and not p.shared_order for p in _programs(cfg))


def test_auto_strategy_on_cpu_vmaps_only_where_measured_faster(train_mlp):
    lenet_params = init_variables(build_model(LENET), 0, (8, 8, 3))["params"]
    mlp_params = train_mlp[1]["params"]
    resolve = train_mod.resolve_strategy
    assert resolve("auto", mlp_params, kind="network", shared_order=True) == "vmap"
    assert resolve("auto", lenet_params, kind="linear", shared_order=True) == "vmap"
    assert resolve("auto", lenet_params, kind="network", shared_order=True) == "sequential"
    assert resolve("auto", mlp_params, kind="network", shared_order=False) == "sequential"
    assert resolve("auto", mlp_params, shared_order=True, shared_inputs=False) == "sequential"
    assert resolve("auto", mlp_params, shared_order=True, num_tasks=1) == "sequential"
    assert resolve("chunked", lenet_params) == "chunked"
    with pytest.raises(ValueError, match="strategy"):
        resolve("pmap", mlp_params)


def test_tasks_with_their_own_inputs(train_data, train_mlp):
    """The NAD experiments' case: every task has its own dataset (docs/methods.md §3.4)."""
    module, variables = train_mlp
    x, y, xt, yt = train_data
    rng = np.random.default_rng(1)
    xs = np.stack([x, x[::-1], rng.normal(size=x.shape).astype(np.float32)])
    xts = np.stack([xt, xt[::-1], rng.normal(size=xt.shape).astype(np.float32)])
    ys, yts = np.stack([y, y[::-1], y]), np.stack([yt, yt[::-1], 1 - yt])
    cfg = TrainConfig(epochs=2, batch_size=16, max_lr=0.2)
    singles = [
        train_model(module, variables, "network", xs[t], ys[t], xts[t], yts[t], cfg, 4)
        for t in range(3)
    ]
    for strategy in ("vmap", "chunked", "sequential", "auto"):
        runs = train_sweep(
            module, variables, "network", xs, ys, xts, yts, cfg, [4] * 3, strategy=strategy
        )
        for a, b in zip(singles, runs, strict=True):
            _assert_results_close(a, b)
    assert any(p.vmapped and not p.shared_inputs for p in _programs(cfg))
    # Task 1 is task 0's data reordered, which changes the batches: different training.
    assert not np.allclose(singles[0].history["train_loss"], singles[1].history["train_loss"])
    with pytest.raises(ValueError, match="one \\(N, H, W, C\\) array per task"):
        train_sweep(module, variables, "network", xs[:2], ys, xts[:2], yts, cfg, [4] * 3)
    with pytest.raises(ValueError, match="both"):
        train_sweep(module, variables, "network", xs, ys, xt, yts, cfg, [4] * 3)


def test_a_diverged_vmapped_task_keeps_its_last_finite_state(train_data, train_mlp):
    """Task 1's inputs overflow the loss; it stops, the others are unaffected."""
    module, variables = train_mlp
    x, y, xt, yt = train_data
    xs = np.stack([x, x * 1e30, -x])
    xts = np.stack([xt, xt, -xt])
    ys, yts = np.stack([y, y, y]), np.stack([yt, yt, yt])
    cfg = TrainConfig(epochs=3, batch_size=16, max_lr=0.2)
    vmap = train_sweep(
        module, variables, "network", xs, ys, xts, yts, cfg, [0] * 3, strategy="vmap"
    )
    assert [r.diverged for r in vmap] == [False, True, False]
    assert vmap[1].final["epochs_completed"] == 0
    # It kept θ0 (its first epoch was not finite) although the program went on.
    for u, v in zip(
        jax.tree_util.tree_leaves(vmap[1].params),
        jax.tree_util.tree_leaves(variables["params"]),
        strict=True,
    ):
        np.testing.assert_array_equal(u, v)
    for t in (0, 2):
        single = train_model(module, variables, "network", xs[t], y, xts[t], yt, cfg, 0)
        _assert_results_close(single, vmap[t])


def test_determinism_and_key_dependence(train_data, train_mlp):
    module, variables = train_mlp
    x, y, xt, yt = train_data
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


def test_resnet_batchnorm_updates_for_network_and_is_frozen_for_linear(train_data):
    module = build_model({"name": "resnet18", "stage_sizes": (1,), "num_filters": 4})
    variables = init_variables(module, 0, (8, 8, 3))
    x, y, xt, yt = train_data
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


def test_linear_diff_starts_at_zero_output_from_linearization_point(train_data, train_mlp):
    module, variables = train_mlp
    x, y, xt, yt = train_data
    point = {"params": jax.tree_util.tree_map(lambda a: a * 1.1, variables["params"])}
    cfg = TrainConfig(epochs=1, batch_size=16, max_lr=1e-12, lr_schedule="fixed")
    result = train_model(
        module, variables, "linear_diff", x, y, xt, yt, cfg, 0, linearization_point=point
    )
    # Output 0 everywhere: BCE = log 2 and logit 0 is class 0.
    np.testing.assert_allclose(result.history["test_loss"][0], np.log(2.0), rtol=1e-5)
    assert result.history["param_distance"][0] < 1e-6
    # Negative control: the plain linearisation at θ0 does not output 0.
    lin = train_model(module, variables, "linear", x, y, xt, yt, cfg, 0)
    assert abs(lin.history["test_loss"][0] - np.log(2.0)) > 1e-3


def test_bad_inputs_raise_clear_errors(train_data, train_mlp):
    module, variables = train_mlp
    x, y, xt, yt = train_data
    cfg = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="Valid kinds"):
        train_model(module, variables, "kernel", x, y, xt, yt, cfg, 0)
    with pytest.raises(ValueError, match="labels"):
        train_model(module, variables, "network", x, y[:-1], xt, yt, cfg, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_model(module, variables, "network", x, 2 * y, xt, yt, cfg, 0)
    with pytest.raises(ValueError, match="only used by kind='linear_diff'"):
        train_model(module, variables, "linear", x, y, xt, yt, cfg, 0, linearization_point={})
    with pytest.raises(ValueError, match="one key per task"):
        train_sweep(module, variables, "network", x, y[None], xt, yt[None], cfg, [0, 1])
    with pytest.raises(ValueError, match="strategy"):
        train_sweep(
            module, variables, "network", x, y[None], xt, yt[None], cfg, [0], strategy="pmap"
        )
