"""The paper's MLP (docs/methods.md §1.2): flatten, hidden Dense layers, one output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax

from .registry import ACTIVATIONS, ModelConfig, dense_head, register_model


class MLP(nn.Module):
    """Flatten (H-W-C order) → [Dense → act]* → Dense(1)."""

    features: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(B, H, W, C) -> (B, 1)."""
        del train
        return dense_head(x, self.features, ACTIVATIONS[self.activation])


@dataclass(frozen=True)
class MLPConfig(ModelConfig):
    """``models.mlp``: ``features`` are the hidden widths."""

    name: str = "mlp"
    features: tuple[int, ...] = (100, 100)


register_model("mlp", MLPConfig, lambda c: MLP(features=c.features, activation=c.activation))
