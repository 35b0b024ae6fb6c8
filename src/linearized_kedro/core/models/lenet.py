"""The repository's LeNet-5 variant (docs/methods.md §1.2): SAME convolutions, 2x2 average pooling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax

from ..layers import Conv
from .registry import ACTIVATIONS, ModelConfig, dense_head, register_model


class LeNet(nn.Module):
    """[Conv 5x5 SAME → act → avg-pool 2x2]* → flatten → [Dense → act]* → Dense(1)."""

    conv_features: Sequence[int] = (6, 16)
    dense_features: Sequence[int] = (120, 84)
    activation: str = "relu"
    conv_autodiff: str = "lax"  # derivative rule of the convolutions (layers.py)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(B, H, W, C) -> (B, 1)."""
        del train
        act = ACTIVATIONS[self.activation]
        for width in self.conv_features:
            x = act(Conv(width, (5, 5), padding="SAME", conv_autodiff=self.conv_autodiff)(x))
            x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        return dense_head(x, self.dense_features, act)


@dataclass(frozen=True)
class LeNetConfig(ModelConfig):
    """``models.lenet``: convolution and hidden dense widths."""

    name: str = "lenet"
    conv_features: tuple[int, ...] = (6, 16)
    dense_features: tuple[int, ...] = (120, 84)

    def check_input_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = super().check_input_shape(input_shape)
        if min(shape[:2]) < 4:
            raise ValueError(
                f"LeNet pools twice by 2, so it needs images of at least 4x4; got {shape}."
            )
        return shape


register_model(
    "lenet",
    LeNetConfig,
    lambda c: LeNet(c.conv_features, c.dense_features, c.activation),
)
