"""The ``train:`` block, schedules and optimisers (core/train/config.py, docs/methods.md §1.6)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from linearized_kedro.core.config import ConfigError
from linearized_kedro.core.train import (
    TrainConfig,
    make_optimizer,
    make_schedule,
    steps_per_epoch,
)


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
    assert TrainConfig.SECTION == "train"
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    assert TrainConfig.from_dict(None) == TrainConfig()
    with pytest.raises(ConfigError, match=r"Unknown key\(s\) train\.epoch\b.*epochs"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        TrainConfig(epochs="3")
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="train.momentum"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ConfigError, match="train.max_lr"):
        TrainConfig(max_lr=float("nan"))
    with pytest.raises(ConfigError, match="piecewise"):
        TrainConfig(lr_schedule="piecewise")
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="train.epoch_mode"):
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


def test_adam_first_step_is_the_signed_learning_rate():
    """Adam's bias-corrected first step is −lr·g/(|g| + ε) ≈ −lr·sign(g); SGD's is −lr·g."""
    g = jnp.array([4.0, -0.25, 1e-3])
    theta = jnp.zeros(3)
    adam = make_optimizer(TrainConfig(optimizer="adam", max_lr=0.1, lr_schedule="fixed"), 10)
    updates, _ = adam.update(g, adam.init(theta), theta)
    np.testing.assert_allclose(updates, -0.1 * np.sign(g), rtol=1e-4)
    sgd = make_optimizer(TrainConfig(max_lr=0.1, lr_schedule="fixed"), 10)
    updates, _ = sgd.update(g, sgd.init(theta), theta)
    np.testing.assert_allclose(updates, -0.1 * g, rtol=1e-6)
