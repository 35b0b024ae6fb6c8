"""One optimiser step: ``train_step(state, batch) -> (state, metrics)`` (docs/methods.md §1.5, §1.6).

The model being trained is one of three *kinds* of function of θ:

* ``"network"``: ``module.apply``; BatchNorm in training mode, its statistics updated
  (the ``model_state`` of the :class:`TrainState`).
* ``"linear"``: f(θ0, x) + J(θ0, x)(θ − θ0), BN in inference mode with the statistics of
  θ0 frozen (docs/methods.md §1.3, §1.5).
* ``"linear_diff"``: J(θc, x)(θ − θc), started at θc (docs/methods.md §1.5, §3.5).

The point a kind refers to (θ0 for distances, the linearisation point and its frozen BN
statistics) is an :class:`Anchor`: arrays passed to the compiled programs, never closed
over (so they are not baked into the program as constants).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from ..linearize import linearize, linearize_diff

KINDS = ("network", "linear", "linear_diff")

Logits = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]


@flax.struct.dataclass
class TrainState:
    """Everything a training step updates.

    Attributes:
        params: the trainable parameters θ.
        opt_state: the optimiser's state (momentum buffers, step count).
        model_state: non-trainable collections updated in training mode (a network's BN
            statistics); ``{}`` for linear kinds, whose BN is frozen at the anchor.
        step: () int32, optimiser steps taken.
    """

    params: Any
    opt_state: Any
    model_state: Any
    step: jax.Array

    @classmethod
    def create(
        cls, params: Any, model_state: Any, optimizer: optax.GradientTransformation
    ) -> TrainState:
        """The state before the first step."""
        return cls(params, optimizer.init(params), model_state, jnp.zeros((), jnp.int32))


class Anchor(NamedTuple):
    """The fixed point of a run.

    Attributes:
        params: θ0 (distances are measured from it); for linear kinds also the
            linearisation point.
        state: the BN statistics frozen in linear kinds (``{}`` for networks).
    """

    params: Any
    state: Any


class Batch(NamedTuple):
    """One batch; masked positions (padding of the last batch) weigh 0.

    Attributes:
        x: (B, H, W, C) inputs. y: (B,) labels in [0, 1]. mask: (B,) 1 valid, 0 padding.
    """

    x: jax.Array
    y: jax.Array
    mask: jax.Array


def binary_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array):
    """Masked sums of BCE-on-logits and of correct predictions.

    Accuracy follows docs/methods.md §1.6: predicted class 1 iff logit > 0 (a logit of exactly 0 is
    class 0), true class 1 iff label > 0.5.

    Args:
        logits: (B,). labels: (B,) in [0, 1]. mask: (B,) 1 for valid samples, 0 for padding.

    Returns:
        (loss_sum, correct_sum) scalars.
    """
    losses = optax.sigmoid_binary_cross_entropy(logits, labels)
    correct = ((logits > 0) == (labels > 0.5)).astype(logits.dtype)
    return jnp.sum(jnp.where(mask > 0, losses, 0.0)), jnp.sum(correct * mask)


def model_functions(module: nn.Module, kind: str, anchor: Anchor) -> tuple[Logits, Callable]:
    """The logits of a kind in training and in evaluation mode.

    Args:
        module: a model from ``models.build_model``.
        kind: one of ``KINDS``.
        anchor: the run's :class:`Anchor`.

    Returns:
        ``train_logits(params, model_state, x (B, H, W, C)) -> ((B,), new_model_state)``
        and ``eval_logits(params, model_state, x) -> (B,)``.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}. Valid kinds: {KINDS}.")
    if kind == "network":

        def train_logits(params, model_state, x):
            if model_state:
                out, updates = module.apply(
                    {"params": params, **model_state}, x, train=True, mutable=list(model_state)
                )
                return out[:, 0], {**model_state, **updates}
            return module.apply({"params": params}, x, train=True)[:, 0], model_state

        def eval_logits(params, model_state, x):
            return module.apply({"params": params, **model_state}, x, train=False)[:, 0]

        return train_logits, eval_logits

    def f(params, x):
        return module.apply({"params": params, **anchor.state}, x, train=False)[:, 0]

    f_model = (linearize if kind == "linear" else linearize_diff)(f, anchor.params)

    def train_logits_linear(params, model_state, x):
        return f_model(params, x), model_state

    def eval_logits_linear(params, model_state, x):
        del model_state
        return f_model(params, x)

    return train_logits_linear, eval_logits_linear


def make_train_step(
    train_logits: Logits, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """``train_step(state, batch) -> (state, metrics)``: one step on the masked mean BCE.

    Args:
        train_logits: from :func:`model_functions`.
        optimizer: from ``config.make_optimizer``.

    Returns:
        A pure function; ``metrics`` holds ``loss_sum`` and ``correct`` (sums over the
        batch's valid samples, computed with the parameters before the step).
    """

    def train_step(state: TrainState, batch: Batch):
        def loss_fn(params):
            logits, model_state = train_logits(params, state.model_state, batch.x)
            loss_sum, correct = binary_metrics(logits, batch.y, batch.mask)
            return loss_sum / jnp.sum(batch.mask), (model_state, loss_sum, correct)

        grads, (model_state, loss_sum, correct) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = TrainState(
            optax.apply_updates(state.params, updates), opt_state, model_state, state.step + 1
        )
        return new_state, {"loss_sum": loss_sum, "correct": correct}

    return train_step
