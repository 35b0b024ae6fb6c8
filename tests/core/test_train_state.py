"""One optimiser step (core/train/state.py) against the explicit float64 Jacobian.

For BCE on logits the gradient of the masked mean loss is Jᵀ((σ(f) − y)·m) / Σm, with J the
Jacobian of the logits at the point the model is differentiated (θ for the network, θ0
for its linearisation, docs/methods.md §1.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from reference import explicit_jacobian, rel_err, tolerance

from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.train import (
    Anchor,
    Batch,
    TrainConfig,
    TrainState,
    make_optimizer,
    make_train_step,
    model_functions,
)

MLP = {"name": "mlp", "features": (6, 5), "activation": "gelu"}


@pytest.fixture(scope="module")
def setup():
    module = build_model(MLP)
    variables = init_variables(module, 0, (3, 3, 2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 3, 2)).astype(np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 1], np.float32)
    return module, variables, Batch(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask))


def _reference_gradient(jac, logits, batch):
    """Jᵀ((σ(f) − y)·m) / Σm in float64, flat."""
    y, m = np.asarray(batch.y, np.float64), np.asarray(batch.mask, np.float64)
    residual = (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))) - y) * m
    return jac.T @ residual / m.sum()


def _step(module, kind, anchor, start_params, lr=0.3):
    optimizer = make_optimizer(TrainConfig(max_lr=lr, lr_schedule="fixed", momentum=0.9), 10)
    train_logits, _ = model_functions(module, kind, anchor)
    state = TrainState.create(start_params, {}, optimizer)
    return jax.jit(make_train_step(train_logits, optimizer)), state


@pytest.mark.parametrize("kind", ["network", "linear"])
def test_two_steps_equal_explicit_float64_heavy_ball(setup, kind):
    module, variables, batch = setup
    params0 = variables["params"]
    flat0, unravel = ravel_pytree(params0)
    step, state = _step(module, kind, Anchor(params0, {}), params0)
    s1, metrics = step(state, batch)
    s2, _ = step(s1, batch)
    assert int(s1.step) == 1 and int(s2.step) == 2
    # Reference: m1 = g0; θ1 = θ0 − lr m1; m2 = g1 + 0.9 m1; θ2 = θ1 − lr m2.
    j0 = explicit_jacobian(module, variables, batch.x)
    f0 = np.asarray(module.apply(variables, batch.x)[:, 0], np.float64)
    g0 = _reference_gradient(j0, f0, batch)
    theta1 = np.asarray(flat0, np.float64) - 0.3 * g0
    if kind == "network":
        v1 = {"params": unravel(jnp.asarray(theta1, jnp.float32))}
        j1 = explicit_jacobian(module, v1, batch.x)
        f1 = np.asarray(module.apply(v1, batch.x)[:, 0], np.float64)
    else:  # the linear model keeps J(θ0) and moves along it
        j1, f1 = j0, f0 + j0 @ (theta1 - np.asarray(flat0, np.float64))
    g1 = _reference_gradient(j1, f1, batch)
    theta2 = theta1 - 0.3 * (g1 + 0.9 * g0)
    tol = 10 * tolerance("float32")
    assert rel_err(ravel_pytree(s1.params)[0], theta1) < tol
    assert rel_err(ravel_pytree(s2.params)[0], theta2) < tol
    # Metrics are sums over the valid samples, with the parameters before the step.
    m = np.asarray(batch.mask, bool)
    y = np.asarray(batch.y)
    bce = np.logaddexp(0, f0) - y * f0
    np.testing.assert_allclose(metrics["loss_sum"], bce[m].sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["correct"], np.sum(((f0 > 0) == (y > 0.5))[m]))


def test_masked_samples_do_not_move_the_step(setup):
    module, variables, batch = setup
    params0 = variables["params"]
    step, state = _step(module, "network", Anchor(params0, {}), params0)
    base = ravel_pytree(step(state, batch)[0].params)[0]
    flipped_masked = batch._replace(y=batch.y.at[5].set(1 - batch.y[5]))
    np.testing.assert_array_equal(ravel_pytree(step(state, flipped_masked)[0].params)[0], base)
    flipped_valid = batch._replace(y=batch.y.at[0].set(1 - batch.y[0]))  # negative control
    assert not np.allclose(ravel_pytree(step(state, flipped_valid)[0].params)[0], base)


def test_linear_kinds_freeze_bn_and_linear_diff_is_zero_at_the_point():
    module = build_model({"name": "resnet18", "stage_sizes": (1,), "num_filters": 4})
    variables = init_variables(module, 0, (4, 4, 3))
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 3))
    anchor = Anchor(variables["params"], {"batch_stats": variables["batch_stats"]})
    lin, _ = model_functions(module, "linear", anchor)
    diff, _ = model_functions(module, "linear_diff", anchor)
    net, _ = model_functions(module, "network", Anchor(variables["params"], {}))
    logits, state = lin(variables["params"], {}, x)
    np.testing.assert_allclose(logits, module.apply(variables, x)[:, 0], rtol=1e-5, atol=1e-6)
    assert state == {}
    np.testing.assert_array_equal(diff(variables["params"], {}, x)[0], np.zeros(3))
    # The network updates its statistics in training mode (the linear model does not).
    _, new_stats = net(variables["params"], {"batch_stats": variables["batch_stats"]}, x)
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.allclose(a, b), variables["batch_stats"], new_stats["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(changed))
    with pytest.raises(ValueError, match="Valid kinds"):
        model_functions(module, "kernel", anchor)
