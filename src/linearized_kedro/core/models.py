"""The three single-output networks of the paper (SPEC §1.2) and their functions of θ.

Every module has the call signature ``module.apply(variables, x, train=False) -> (B, 1)``
with ``x`` of shape (B, H, W, C). ``train`` only matters for ResNet18's BatchNorm; all
functions of θ used for kernels, linearisations, NADs and evaluation run it with
``train=False`` (SPEC §1.3), which makes samples independent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .layers import Conv

MODEL_NAMES = ("mlp", "lenet", "resnet18")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # tanh approximation, Flax's default (SPEC §1.2)
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
}


@dataclass(frozen=True)
class ModelConfig:
    """A model preset, as stored under ``models:`` in ``conf/base/parameters.yml``.

    Attributes:
        name: one of ``MODEL_NAMES``.
        activation: one of ``ACTIVATIONS`` (case-insensitive).
        features: hidden widths of the MLP.
        conv_features: LeNet's convolution widths.
        dense_features: LeNet's hidden dense widths.
        stage_sizes: ResNet blocks per stage.
        num_filters: ResNet stem width.
        input_shape: optional (H, W, C) the preset is restricted to (e.g. NAD images).
    """

    name: str
    activation: str = "relu"
    features: tuple[int, ...] = (100, 100)
    conv_features: tuple[int, ...] = (6, 16)
    dense_features: tuple[int, ...] = (120, 84)
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    num_filters: int = 64
    input_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(
                f"Unknown model {self.name!r}. Valid models: {', '.join(MODEL_NAMES)}."
            )
        act = self.activation.lower()
        if act not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r} for model {self.name!r}. "
                f"Valid activations: {', '.join(ACTIVATIONS)}."
            )
        object.__setattr__(self, "activation", act)
        for name in ("features", "conv_features", "dense_features", "stage_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | ModelConfig) -> ModelConfig:
        """Builds a config from a parameters mapping, rejecting unknown keys."""
        if isinstance(config, ModelConfig):
            return config
        if not isinstance(config, Mapping) or "name" not in config:
            raise ValueError(
                "A model config must be a mapping with a 'name' key, e.g. "
                "{'name': 'lenet', 'activation': 'relu'}; got " + repr(config)
            )
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(
                f"Unknown keys {sorted(unknown)} in the config of model {config['name']!r}. "
                f"Valid keys: {sorted(known)}."
            )
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, stored beside every artifact."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def check_input_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Validates an (H, W, C) input shape for this preset; returns it as a tuple."""
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Model {self.name!r} takes images of shape (H, W, C); got {shape}.")
        if self.input_shape is not None and shape != self.input_shape:
            raise ValueError(
                f"Model preset {self.name!r} is configured for inputs of shape "
                f"{self.input_shape} but the data has shape {shape}. Use a dataset of that "
                "shape or change the preset's 'input_shape'."
            )
        if self.name == "lenet" and min(shape[:2]) < 4:
            raise ValueError(
                f"LeNet pools twice by 2, so it needs images of at least 4x4; got {shape}."
            )
        return shape


class MLP(nn.Module):
    """Flatten (H-W-C order) → [Dense → act]* → Dense(1)."""

    features: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = act(nn.Dense(width)(x))
        return nn.Dense(1)(x)


class LeNet(nn.Module):
    """The repository's LeNet-5 variant: SAME convs, 2x2 average pooling (SPEC §1.2)."""

    conv_features: Sequence[int] = (6, 16)
    dense_features: Sequence[int] = (120, 84)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        act = ACTIVATIONS[self.activation]
        for width in self.conv_features:
            x = act(Conv(width, (5, 5), padding="SAME")(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        for width in self.dense_features:
            x = act(nn.Dense(width)(x))
        return nn.Dense(1)(x)


class ResNetBlock(nn.Module):
    """Basic block with zero-initialised last BN scale (SPEC §1.2)."""

    filters: int
    strides: tuple[int, int] = (1, 1)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        residual = x
        y = Conv(self.filters, (3, 3), self.strides, padding="SAME", use_bias=False)(x)
        y = act(norm()(y))
        y = Conv(self.filters, (3, 3), padding="SAME", use_bias=False)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if residual.shape != y.shape:
            residual = Conv(self.filters, (1, 1), self.strides, use_bias=False, name="conv_proj")(
                residual
            )
            residual = norm(name="norm_proj")(residual)
        return act(residual + y)


class ResNet18(nn.Module):
    """CIFAR ResNet18 (v1): 3x3 stem, no max-pool, four stages, GAP, Dense(1)."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_filters: int = 64
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = Conv(
            self.num_filters, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv_init"
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn_init")(
            x
        )
        x = act(x)
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = ResNetBlock(self.num_filters * 2**i, strides, self.activation)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(1)(x)


def build_model(config: Mapping[str, Any] | ModelConfig) -> nn.Module:
    """Builds the Flax module of a preset.

    Args:
        config: a ``ModelConfig`` or its dict form (``{'name': 'lenet', ...}``).

    Returns:
        A module with ``apply(variables, x (B,H,W,C), train=False) -> (B, 1)``.
    """
    cfg = ModelConfig.from_dict(config)
    if cfg.name == "mlp":
        return MLP(features=cfg.features, activation=cfg.activation)
    if cfg.name == "lenet":
        return LeNet(cfg.conv_features, cfg.dense_features, cfg.activation)
    return ResNet18(cfg.stage_sizes, cfg.num_filters, cfg.activation)


def init_variables(
    module: nn.Module, key: jax.Array | int, input_shape: Sequence[int]
) -> dict[str, Any]:
    """θ0 (and BN state) from an integer seed or a key, on a zero input (SPEC §1.7).

    Args:
        module: a module from ``build_model``.
        key: a PRNG key or an integer seed (``jax.random.key(seed)``).
        input_shape: (H, W, C).

    Returns:
        ``{'params': ..., ['batch_stats': ...]}`` as plain dicts.
    """
    if isinstance(key, int | np.integer):
        key = jax.random.key(int(key))
    x = jnp.zeros((1, *tuple(input_shape)), jnp.float32)
    # Compiled: Flax's eager initialisers dispatch hundreds of tiny ops (seconds on a CPU).
    variables = jax.jit(partial(module.init, train=False))(key, x)
    return jax.tree_util.tree_map(lambda a: a, dict(variables))


def split_variables(variables: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Splits variables into (trainable params, non-trainable state such as BN stats)."""
    state = {k: v for k, v in variables.items() if k != "params"}
    return variables["params"], state


def scalar_apply(module: nn.Module, state: Mapping[str, Any]) -> Callable:
    """f(θ, x) -> (B,) logits with BN in inference mode: the "function of θ" (SPEC §1.3).

    Args:
        module: a module from ``build_model``.
        state: the non-trainable collections (``{}`` or ``{'batch_stats': ...}``).
    """

    def f(params: Any, x: jax.Array) -> jax.Array:
        return module.apply({"params": params, **state}, x, train=False)[:, 0]

    return f


def count_params(params: Any) -> int:
    """Number of scalar entries of a parameter pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
