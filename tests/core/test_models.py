"""Architectures of docs/methods.md §1.2 and the registry: parameter counts, BN modes, configs, a toy model."""

from dataclasses import dataclass

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linearized_kedro.core import models
from linearized_kedro.core.config import ConfigError
from linearized_kedro.core.models import (
    ACTIVATIONS,
    MODEL_NAMES,
    LeNetConfig,
    ModelConfig,
    build_model,
    count_params,
    init_variables,
    model_config,
    register_model,
    scalar_apply,
    split_variables,
    unregister_model,
)
from linearized_kedro.core.train import TrainConfig, train_model

# docs/methods.md §1.2 table (verified by instantiating the original architectures).
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


TINY = {
    "mlp": {"features": [8]},
    "lenet": {"conv_features": [2, 3], "dense_features": [4]},
    "resnet18": {"stage_sizes": [1], "num_filters": 4},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_single_output_and_determinism(name):
    module = build_model({"name": name, **TINY[name]})
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 3))
    v1 = init_variables(module, 42, (4, 4, 3))
    v2 = init_variables(module, 42, (4, 4, 3))
    chex_equal = jax.tree_util.tree_map(np.array_equal, v1, v2)
    assert all(jax.tree_util.tree_leaves(chex_equal))
    out = jax.jit(module.apply, static_argnames="train")(v1, x, train=False)
    assert out.shape == (3, 1)


def test_resnet_inference_mode_is_per_sample_and_immutable():
    """docs/methods.md §1.3: inference-mode BN with immutable state must not raise, and must not
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
    """docs/methods.md §1.2 structural fact: residual-branch convs get exactly zero gradient at init."""
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
    with pytest.raises(ConfigError, match="Valid models: lenet, mlp, resnet18"):
        ModelConfig.from_dict({"name": "vgg"})
    with pytest.raises(ConfigError, match="'name' key"):
        model_config({"activation": "relu"})


def test_unknown_activation_and_keys():
    with pytest.raises(ConfigError, match="Valid activations"):
        ModelConfig.from_dict({"name": "mlp", "activation": "swish"})
    # A key of another architecture is unknown to this one: named, with the valid keys.
    with pytest.raises(ConfigError, match=r"model_config\.conv_features.*features"):
        ModelConfig.from_dict({"name": "mlp", "conv_features": [3]})
    with pytest.raises(ConfigError, match=r"model_config\.features must be a list"):
        model_config({"name": "mlp", "features": "wide"})
    with pytest.raises(ConfigError, match="config of model 'lenet'"):
        LeNetConfig(name="mlp")


def test_config_class_is_picked_by_name_and_round_trips():
    """``ModelConfig(**mapping)`` is what Kedro calls for a typed ``params:`` input."""
    config = ModelConfig(name="lenet", activation="GELU", conv_features=[2, 3])
    assert type(config) is LeNetConfig and config.activation == "gelu"
    assert config.conv_features == (2, 3) and config.dense_features == (120, 84)
    assert model_config(config.to_dict()) == config
    assert set(config.to_dict()) == {
        "name",
        "activation",
        "input_shape",
        "conv_features",
        "dense_features",
    }
    assert model_config("resnet18") == ModelConfig.from_dict({"name": "resnet18"})
    assert model_config("resnet18") != model_config({"name": "resnet18", "num_filters": 8})


def test_wrong_image_shape_for_preset():
    config = ModelConfig.from_dict({"name": "lenet", "input_shape": [32, 32, 1]})
    assert config.check_input_shape((32, 32, 1)) == (32, 32, 1)
    with pytest.raises(ValueError, match="configured for inputs of shape"):
        config.check_input_shape((28, 28, 1))
    with pytest.raises(ValueError, match="at least 4x4"):
        ModelConfig.from_dict({"name": "lenet"}).check_input_shape((2, 2, 1))
    # The pooling constraint is LeNet's own: the MLP takes 2x2 images.
    assert ModelConfig.from_dict({"name": "mlp"}).check_input_shape((2, 2, 1)) == (2, 2, 1)
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        ModelConfig.from_dict({"name": "mlp"}).check_input_shape((32, 32))


# A new architecture is one definition: its module, its config and one registration.
class Toy(nn.Module):
    width: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, train=False):
        h = ACTIVATIONS[self.activation](nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(1)(h)


@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    name: str = "toy"
    width: int = 3


@pytest.fixture
def toy_registered():
    register_model("toy", ToyConfig, lambda c: Toy(c.width, c.activation))
    try:
        yield
    finally:
        unregister_model("toy")


def test_toy_model_is_one_definition(toy_registered):
    assert "toy" in models.MODEL_NAMES
    config = ModelConfig(name="toy", width=5, activation="tanh")
    assert isinstance(config, ToyConfig)
    module = build_model({"name": "toy", "width": 5})
    variables = init_variables(module, 0, (4, 4, 2))
    assert count_params(variables["params"]) == (32 * 5 + 5) + (5 + 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 4, 4, 2)).astype(np.float32)
    y = (x[:, 0, 0, 0] > 0).astype(np.float32)
    cfg = TrainConfig(epochs=1, batch_size=8, max_lr=0.5)
    result = train_model(module, variables, "network", x[:16], y[:16], x[16:], y[16:], cfg, 0)
    assert result.final["epochs_completed"] == 1 and not result.diverged
    assert result.history["param_distance"][0] > 0  # it trained
    with pytest.raises(ConfigError, match="Unknown key"):
        model_config({"name": "toy", "features": [3]})


def test_toy_model_is_unknown_once_unregistered():
    assert "toy" not in models.MODEL_NAMES
    with pytest.raises(ConfigError, match="Unknown model 'toy'"):
        build_model({"name": "toy"})
