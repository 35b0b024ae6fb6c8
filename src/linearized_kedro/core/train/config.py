"""The ``train:`` block, its learning-rate schedules and its optimisers (docs/methods.md §1.6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import optax

from ..config import Config, ConfigError, from_mapping

SCHEDULES = ("linear", "fixed", "cyclic")
OPTIMIZERS = ("sgd", "adam")
EPOCH_MODES = ("auto", "scan", "loop")


def _check_schedule_name(name: str, key: str = "lr_schedule") -> None:
    if name == "piecewise":
        raise ConfigError(
            f"{key} 'piecewise' is not implemented (it raised in the original too, "
            f"docs/methods.md §1.6). Use one of {', '.join(SCHEDULES)}."
        )
    if name not in SCHEDULES:
        raise ConfigError(f"Unknown {key} {name!r}. Valid schedules: {', '.join(SCHEDULES)}.")


@dataclass(frozen=True)
class TrainConfig(Config):
    """The ``train`` block of an experiment's parameters (defaults of docs/methods.md §1.6).

    Attributes:
        epochs: passes over the training set.
        max_lr: peak learning rate.
        lr_schedule: ``"linear"``, ``"fixed"`` or ``"cyclic"``.
        momentum: heavy-ball momentum of SGD (ignored by Adam).
        batch_size: samples per optimiser step.
        optimizer: ``"sgd"`` or ``"adam"``.
        epoch_mode: how an epoch is executed (same numbers either way): ``"scan"`` (one
            compiled ``lax.scan`` per epoch), ``"loop"`` (a Python loop over one compiled,
            buffer-donating step per batch; no host round trip per step) or ``"auto"``
            (``sweep.resolve_epoch_mode``).
    """

    SECTION: ClassVar[str] = "train"

    epochs: int = 100
    max_lr: float = 0.05
    lr_schedule: str = "linear"
    momentum: float = 0.9
    batch_size: int = 128
    optimizer: str = "sgd"
    epoch_mode: str = "auto"

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1; got {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1; got {self.batch_size}.")
        if not self.max_lr > 0 or not math.isfinite(self.max_lr):
            raise ConfigError(f"train.max_lr must be a positive number; got {self.max_lr}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum must be in [0, 1); got {self.momentum}.")
        _check_schedule_name(self.lr_schedule, "train.lr_schedule")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"Unknown train.optimizer {self.optimizer!r}. Valid: {', '.join(OPTIMIZERS)}."
            )
        if self.epoch_mode not in EPOCH_MODES:
            raise ConfigError(
                f"Unknown train.epoch_mode {self.epoch_mode!r}. Valid: {', '.join(EPOCH_MODES)}."
            )

    @classmethod
    def from_dict(cls, config: Any) -> TrainConfig:
        """A config from a parameters mapping (``None``: defaults); unknown keys are errors."""
        return from_mapping(cls, config)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps per epoch: ``ceil(n_train / batch_size)`` (last batch masked)."""
    return -(-int(n_train) // int(batch_size))


def make_schedule(name: str, max_lr: float, total_steps: int) -> optax.Schedule:
    """Learning-rate schedule of docs/methods.md §1.6 over ``total_steps`` optimiser steps.

    Args:
        name: ``"linear"`` (max_lr·(1 − t/T), 0 from t = T), ``"fixed"`` or ``"cyclic"``
            (one-cycle triangle: max_lr/1e8 → max_lr at 0.4T → max_lr/1e8 at T and after).
        max_lr: peak learning rate.
        total_steps: T.

    Returns:
        ``schedule(step) -> lr`` (scalar).
    """
    _check_schedule_name(name)
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}.")
    if name == "linear":
        return optax.linear_schedule(max_lr, 0.0, int(total_steps))
    if name == "fixed":
        return optax.constant_schedule(max_lr)
    # pct_final = 1 puts both annealing breakpoints on step T; with div = final_div = 1e8
    # the value from T on is max_lr / 1e8 (the measured values of docs/methods.md §1.6).
    return optax.linear_onecycle_schedule(
        int(total_steps),
        max_lr,
        pct_start=0.4,
        pct_final=1.0,
        div_factor=1e8,
        final_div_factor=1e8,
    )


def make_optimizer(cfg: TrainConfig | Any, total_steps: int) -> optax.GradientTransformation:
    """Heavy-ball SGD (m = g + μ·m; θ ← θ − lr·m) or Adam with the schedule of ``cfg``.

    Args:
        cfg: training config (or its mapping).
        total_steps: T, the schedule horizon (``epochs * steps_per_epoch``).
    """
    cfg = TrainConfig.from_dict(cfg)
    schedule = make_schedule(cfg.lr_schedule, cfg.max_lr, total_steps)
    if cfg.optimizer == "adam":
        return optax.adam(schedule)
    return optax.sgd(schedule, momentum=cfg.momentum, nesterov=False)
