"""CIFAR ResNet18 (v1) with zero-initialised last BN scale per block (docs/methods.md §1.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..layers import Conv
from .registry import ACTIVATIONS, ModelConfig, register_model


class ResNetBlock(nn.Module):
    """Basic block with zero-initialised last BN scale (docs/methods.md §1.2)."""

    filters: int
    strides: tuple[int, int] = (1, 1)
    activation: str = "relu"
    conv_autodiff: str = "lax"  # derivative rule of the convolutions (layers.py)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(B, H, W, C) -> (B, H / s, W / s, filters)."""
        act = ACTIVATIONS[self.activation]
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        conv = partial(Conv, use_bias=False, conv_autodiff=self.conv_autodiff)
        residual = x
        y = conv(self.filters, (3, 3), self.strides, padding="SAME")(x)
        y = act(norm()(y))
        y = conv(self.filters, (3, 3), padding="SAME")(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if residual.shape != y.shape:
            residual = conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = norm(name="norm_proj")(residual)
        return act(residual + y)


class ResNet18(nn.Module):
    """CIFAR ResNet18 (v1): 3x3 stem, no max-pool, four stages, GAP, Dense(1)."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_filters: int = 64
    activation: str = "relu"
    conv_autodiff: str = "lax"  # derivative rule of the convolutions (layers.py)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(B, H, W, C) -> (B, 1)."""
        act = ACTIVATIONS[self.activation]
        x = Conv(
            self.num_filters,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            conv_autodiff=self.conv_autodiff,
            name="conv_init",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn_init")(
            x
        )
        x = act(x)
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                block = ResNetBlock(
                    self.num_filters * 2**i,
                    strides,
                    self.activation,
                    conv_autodiff=self.conv_autodiff,
                )
                x = block(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(1)(x)


@dataclass(frozen=True)
class ResNet18Config(ModelConfig):
    """``models.resnet18``: blocks per stage and the stem width."""

    name: str = "resnet18"
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    num_filters: int = 64


register_model(
    "resnet18",
    ResNet18Config,
    lambda c: ResNet18(c.stage_sizes, c.num_filters, c.activation),
)
