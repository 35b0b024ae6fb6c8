"""The compiled epoch (core/train/epoch.py): masked last batch, averages, one trace, modes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from linearized_kedro.core import train as train_mod
from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.train import TrainConfig, epoch_batches, steps_per_epoch, train_model
from linearized_kedro.core.train.epoch import TRACES


def test_epoch_batches_cover_every_sample_once():
    idx, mask = epoch_batches(jax.random.key(0), 0, 37, 16)
    assert idx.shape == mask.shape == (3, 16)
    valid = np.asarray(idx)[np.asarray(mask) > 0]
    np.testing.assert_array_equal(np.sort(valid), np.arange(37))
    assert np.asarray(mask).sum() == 37 and np.asarray(mask)[-1, 5:].sum() == 0
    # The padding wraps around the permutation (real samples for BatchNorm).
    np.testing.assert_array_equal(np.asarray(idx)[-1, 5:], np.asarray(idx).reshape(-1)[:11])
    other, _ = epoch_batches(jax.random.key(0), 1, 37, 16)  # next epoch: another order
    assert not np.array_equal(np.asarray(idx), np.asarray(other))


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


def test_epoch_masks_last_batch_and_matches_float64_loop(train_data, train_mlp, monkeypatch):
    """37 samples, batch 16: steps of 16, 16 and 5 samples; 21 test samples in padded batches."""
    module, variables = train_mlp
    x, y, xt, yt = train_data
    monkeypatch.setattr(train_mod.sweep, "EVAL_BATCH_SIZE", 8)
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


def test_train_metrics_are_epoch_averages_over_every_sample(train_data, train_mlp):
    """With a negligible learning rate, the epoch's train loss is the mean BCE at θ0."""
    module, variables = train_mlp
    x, y, xt, yt = train_data
    cfg = TrainConfig(epochs=1, batch_size=16, max_lr=1e-12, lr_schedule="fixed")
    result = train_model(module, variables, "network", x, y, xt, yt, cfg, 0)
    logits = np.asarray(module.apply(variables, x)[:, 0], np.float64)
    losses = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    np.testing.assert_allclose(result.history["train_loss"][0], losses.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        result.history["train_accuracy"][0], np.mean((logits > 0) == (y > 0.5)), rtol=1e-6
    )


def _traces(cfg):
    return sum(n for (mode, program), n in TRACES.items() if program.cfg == cfg)


@pytest.mark.parametrize("epoch_mode", ["scan", "loop"])
def test_epoch_program_traces_once_across_epochs_and_runs(train_data, train_mlp, epoch_mode):
    module, variables = train_mlp
    x, y, xt, yt = train_data
    # A config no other test uses, so its program is new here.
    cfg = TrainConfig(epochs=4, batch_size=16, max_lr=0.0123, epoch_mode=epoch_mode)
    first = train_model(module, variables, "network", x, y, xt, yt, cfg, 0)
    assert first.final["epochs_completed"] == 4
    assert _traces(cfg) == 1
    train_model(module, variables, "network", x, 1 - y, xt, 1 - yt, cfg, 1)  # same shapes
    assert _traces(cfg) == 1
    # Negative control: another static setting is another program, and the counter sees it.
    other = cfg.replace(batch_size=8)
    train_model(module, variables, "network", x, y, xt, yt, other, 0)
    assert _traces(other) == 1 and _traces(cfg) == 1


@pytest.mark.parametrize("epoch_mode", ["scan", "loop"])
def test_huge_learning_rate_is_reported_as_diverged(train_data, train_mlp, epoch_mode):
    module, variables = train_mlp
    x, y, xt, yt = train_data
    cfg = TrainConfig(
        epochs=3, batch_size=16, max_lr=1e30, lr_schedule="fixed", epoch_mode=epoch_mode
    )
    result = train_model(module, variables, "network", x, y, xt, yt, cfg, 0)
    assert result.diverged
    assert result.final["epochs_completed"] < 3
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(result.params))


def test_loop_and_scan_epochs_agree_on_tiny_lenet(train_data):
    """Same keys, same numbers whether an epoch is one scan or a loop of donated steps.

    The two modes also differentiate the convolutions differently (hand-written rules under
    scan, XLA's under the loop), so this checks those rules too. Differences are float32
    rounding only (summation order).
    """
    module = build_model({"name": "lenet", "conv_features": (2, 4), "dense_features": (8, 4)})
    variables = init_variables(module, 0, (8, 8, 3))
    x, y, xt, yt = train_data
    assert train_mod.resolve_epoch_mode("auto", variables["params"]) == "scan"
    scan = TrainConfig(epochs=2, batch_size=16, max_lr=0.2, epoch_mode="scan")
    loop = TrainConfig(epochs=2, batch_size=16, max_lr=0.2, epoch_mode="loop")
    for kind in ("network", "linear"):
        by_scan = train_model(module, variables, kind, x, y, xt, yt, scan, 5)
        by_loop = train_model(module, variables, kind, x, y, xt, yt, loop, 5)
        for name in by_scan.history:
            np.testing.assert_allclose(
                by_scan.history[name], by_loop.history[name], rtol=1e-5, atol=1e-6
            )
        for u, v in zip(
            jax.tree_util.tree_leaves(by_scan.params),
            jax.tree_util.tree_leaves(by_loop.params),
            strict=True,
        ):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
        assert by_loop.history["param_distance"][-1] > 1e-3  # it trained
    # The loop donates only its own buffers, never the caller's.
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(variables))


def test_a_task_that_is_not_alive_is_left_unchanged(train_data, train_mlp):
    """Once a task's epoch was non-finite, later epochs keep its state (vmapped sweeps)."""
    from linearized_kedro.core.train import Anchor, EpochProgram, TaskData, TrainState, run_epoch

    module, variables = train_mlp
    x, y, xt, yt = train_data
    cfg = TrainConfig(epochs=2, batch_size=16)
    program = EpochProgram(module, "network", cfg, 37, 21, "scan")
    state = TrainState.create(variables["params"], {}, program.optimizer())
    ones = jnp.ones((1, 21), jnp.float32)
    batches = TaskData(x, y, xt[None], yt[None], ones)
    anchor = Anchor(variables["params"], {})
    key = jax.random.key(0)
    moved, alive, metrics = run_epoch(program, state, jnp.array(True), anchor, batches, key, 0)
    kept, dead, _ = run_epoch(program, state, jnp.array(False), anchor, batches, key, 0)
    assert bool(alive) and bool(metrics["finite"]) and not bool(dead)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(kept), leaves(state), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(moved), leaves(state), strict=True))
