"""Architectures of SPEC §1.2: parameter counts, BN modes, presets and bad input."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linearized_kedro.core.models import (
    ACTIVATIONS,
    MODEL_NAMES,
    ModelConfig,
    build_model,
    count_params,
    init_variables,
    scalar_apply,
    split_variables,
)

# SPEC §1.2 table (verified by instantiating the original architectures).
PARAM_COUNTS = {
    ("mlp", (32, 32, 3)): 317_501,
    ("mlp", (28, 28, 1)): 88_701,
    ("mlp", (32, 32, 1)): 112_701,
    ("lenet", (32, 32, 3)): 136_121,
    ("lenet", (28, 28, 1)): 107_021,
    ("lenet", (32, 32, 1)): 135_821,
    ("resnet18", (32, 32, 3)): 11_169_345,
    ("resnet18", (28, 28, 1)): 11_168_193,
    ("resnet18", (32, 32, 1)): 11_168_193,
}


@pytest.mark.parametrize(("name", "shape"), sorted(PARAM_COUNTS))
def test_parameter_counts_match_spec(name, shape):
    module = build_model({"name": name})
    # eval_shape: no allocation of ResNet18's 11M parameters.
    variables = jax.eval_shape(lambda: init_variables(module, 42, shape))
    params, state = split_variables(variables)
    assert count_params(params) == PARAM_COUNTS[(name, shape)]
    if name == "resnet18":
        assert count_params(state) == 9_600  # BN running means and variances
    else:
        assert state == {}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_single_output_and_determinism(name):
    module = build_model({"name": name, "stage_sizes": [1], "num_filters": 4, "features": [8]})
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 3))
    v1 = init_variables(module, 42, (4, 4, 3))
    v2 = init_variables(module, 42, (4, 4, 3))
    chex_equal = jax.tree_util.tree_map(np.array_equal, v1, v2)
    assert all(jax.tree_util.tree_leaves(chex_equal))
    out = jax.jit(module.apply, static_argnames="train")(v1, x, train=False)
    assert out.shape == (3, 1)


def test_resnet_inference_mode_is_per_sample_and_immutable():
    """SPEC §1.3: inference-mode BN with immutable state must not raise, and must not
    couple samples (the original crashes here)."""
    module = build_model({"name": "resnet18", "stage_sizes": [1, 1], "num_filters": 4})
    variables = init_variables(module, 0, (4, 4, 3))
    params, state = split_variables(variables)
    f = jax.jit(scalar_apply(module, state))
    x = jax.random.normal(jax.random.key(2), (4, 4, 4, 3))
    batch = f(params, x)
    single = jnp.concatenate([f(params, x[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)
    # Training mode updates the running statistics through a mutable collection.
    _, updated = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.allclose(a, b), state["batch_stats"], updated["batch_stats"]
    )
    assert any(jax.tree_util.tree_leaves(changed))


def test_resnet_zero_init_residual_gives_zero_branch_gradients():
    """SPEC §1.2 structural fact: residual-branch convs get exactly zero gradient at init."""
    module = build_model({"name": "resnet18", "stage_sizes": [1, 1], "num_filters": 4})
    variables = init_variables(module, 0, (4, 4, 3))
    params, state = split_variables(variables)
    f = jax.jit(scalar_apply(module, state))
    x = jax.random.normal(jax.random.key(3), (2, 4, 4, 3))
    grads = jax.jit(jax.grad(lambda p: f(p, x).sum()))(params)
    flat = flax.traverse_util.flatten_dict(grads)
    branch = {k: v for k, v in flat.items() if k[0].startswith("ResNetBlock") and k[1] == "Conv_0"}
    assert branch and all(np.all(np.asarray(v) == 0) for v in branch.values())
    assert np.any(np.asarray(flat[("Dense_0", "kernel")]) != 0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activations_selectable(activation):
    module = build_model({"name": "mlp", "activation": activation.upper(), "features": [4]})
    variables = init_variables(module, 0, (2, 2, 1))
    assert module.apply(variables, jnp.ones((1, 2, 2, 1))).shape == (1, 1)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="Valid models: mlp, lenet, resnet18"):
        ModelConfig.from_dict({"name": "vgg"})


def test_unknown_activation_and_keys():
    with pytest.raises(ValueError, match="Valid activations"):
        ModelConfig.from_dict({"name": "mlp", "activation": "swish"})
    with pytest.raises(ValueError, match="Unknown keys"):
        ModelConfig.from_dict({"name": "mlp", "widths": [3]})


def test_wrong_image_shape_for_preset():
    config = ModelConfig.from_dict({"name": "lenet", "input_shape": [32, 32, 1]})
    assert config.check_input_shape((32, 32, 1)) == (32, 32, 1)
    with pytest.raises(ValueError, match="configured for inputs of shape"):
        config.check_input_shape((28, 28, 1))
    with pytest.raises(ValueError, match="at least 4x4"):
        ModelConfig.from_dict({"name": "lenet"}).check_input_shape((2, 2, 1))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        ModelConfig.from_dict({"name": "mlp"}).check_input_shape((32, 32))
