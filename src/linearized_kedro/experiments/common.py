"""What every experiment shares: task indices, model kinds, the CLI shortcuts, the seed.

The original scripts took ``label_idx=10`` and ``linearize=true`` on the command line; the
project keeps them as top-level ``--params`` shortcuts that override the experiment's own
block. They are parsed here and only here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from linearized_kedro.core.config import ConfigError
from linearized_kedro.core.train import TrainingProgress

logger = logging.getLogger(__name__)

# `linearize` values → the model kinds trained (core.train kinds).
KINDS_BY_LINEARIZE = {"false": ("network",), "true": ("linear",), "both": ("network", "linear")}


def model_kinds(linearize: Any, key: str = "linearize") -> tuple[str, ...]:
    """The model kinds for a ``linearize`` value: ``false | true | both`` (bools accepted)."""
    text = str(linearize).lower()
    if text not in KINDS_BY_LINEARIZE:
        raise ConfigError(
            f"{key} must be false, true or both; got {linearize!r}. "
            "Use --params linearize=both to train the network and its linearisation."
        )
    return KINDS_BY_LINEARIZE[text]


def index_list(label_idx: Any, key: str = "label_idx") -> tuple[int, ...]:
    """One integer or a list of integers → sorted distinct non-negative indices."""
    values = (
        label_idx
        if isinstance(label_idx, Sequence | np.ndarray) and not isinstance(label_idx, str)
        else [label_idx]
    )
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"{key} must be an integer or a list of integers; got {value!r}.")
        if value < 0:
            raise ConfigError(f"{key} must be >= 0; got {value}.")
        out.append(int(value))
    if not out:
        raise ConfigError(f"{key} is empty; give at least one index.")
    return tuple(sorted(set(out)))


class TaskSelection:
    """The tasks and model kinds a training experiment's config selects.

    A mixin for a ``Config`` with a ``label_idx`` field and optionally a ``linearize``
    field; errors name ``<SECTION>.label_idx`` and ``<SECTION>.linearize``.
    """

    @property
    def indices(self) -> tuple[int, ...]:
        """The task indices, sorted and distinct."""
        return index_list(self.label_idx, f"{self.SECTION}.label_idx")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The model kinds trained on every task."""
        return model_kinds(self.linearize, f"{self.SECTION}.linearize")

    def check_selection(self) -> None:
        """A ConfigError for a bad ``label_idx`` (or ``linearize``), naming the key."""
        _ = self.indices
        if hasattr(self, "linearize"):
            _ = self.kinds


def check_indices_below(
    indices: Sequence[int], bound: int, key: str, where: str, fix: str = ""
) -> None:
    """Raises a ConfigError naming the indices of ``key`` that are ``>= bound``.

    Args:
        indices: the requested indices.
        bound: the number of available tasks (eigenvectors, NADs).
        key: the parameter, e.g. ``eigen_training.label_idx``.
        where: what sets the bound, e.g. ``the spectrum has k=20 eigenvectors``.
        fix: how to fix it.
    """
    too_big = [j for j in indices if j >= bound]
    if too_big:
        raise ConfigError(
            f"{key} {too_big} out of range: must be < {bound} ({where}, indices "
            f"0..{bound - 1}). {fix}".rstrip()
        )


def with_shortcuts(config: Any, label_idx: Any = None, linearize: Any = None) -> Any:
    """``config`` with the top-level ``label_idx`` / ``linearize`` shortcuts applied.

    Args:
        config: an experiment config with ``label_idx`` (and optionally ``linearize``) fields.
        label_idx: ``--params label_idx=...``; ``None`` keeps the config's own.
        linearize: ``--params linearize=...``; ``None`` keeps the config's own; ignored by
            configs without a ``linearize`` field.
    """
    changes = {}
    if label_idx is not None:
        changes["label_idx"] = label_idx
    if linearize is not None and hasattr(config, "linearize"):
        changes["linearize"] = linearize
    return config.replace(**changes) if changes else config


def training_progress(experiment: str, bars: bool) -> TrainingProgress:
    """The engine's reporter: one INFO line per finished task always; bars if asked on a TTY."""
    return TrainingProgress(experiment, bars=None if bars else False)


def initial_variables(model_cfg: Any, input_shape: Any, seed: Any) -> dict:
    """θ0 (and BatchNorm state) as NumPy arrays: init(key(seed), zeros((1, H, W, C))) (docs/methods.md §1.7).

    Args:
        model_cfg: a model config (or its mapping).
        input_shape: (H, W, C) of the inputs.
        seed: integer seed.
    """
    import jax

    from linearized_kedro.core.models import build_model, count_params, init_variables, model_config

    config = model_config(model_cfg)
    shape = config.check_input_shape(input_shape)
    variables = init_variables(build_model(config), check_seed(seed), shape)
    logger.info(
        "θ0 of %s (%s) on %s inputs: %d parameters",
        config.name,
        config.activation,
        shape,
        count_params(variables["params"]),
    )
    return jax.tree_util.tree_map(np.asarray, variables)


def check_seed(seed: Any) -> int:
    """The integer seed (every PRNG key derives from it), or a ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed must be an integer; got {seed!r}.")
    return int(seed)
