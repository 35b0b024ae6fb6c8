"""The NAD experiment: all neural anisotropy directions of a network at θ0 (docs/methods.md §3.3).

``compute_nads(model_config, config, seed)`` initialises θ0 of the NAD model (the shared
preset with ``nads.activation``, on ``nads.input_shape`` images), builds the averaged
mixed-derivative operator A = ∂²F/∂θ∂δ and returns all D NADs (eigenvectors of AᵀA),
their eigenvalues, the NADs as images and a JSON report. No figures, no files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import numpy as np

from linearized_kedro.core import nads as nads_core
from linearized_kedro.core.config import Config, ConfigError, from_mapping
from linearized_kedro.core.models import (
    ModelConfig,
    build_model,
    count_params,
    init_variables,
    scalar_apply,
    split_variables,
)
from linearized_kedro.experiments.common import check_seed

logger = logging.getLogger(__name__)

SIGN_CONVENTION = "largest-|entry| component positive; ties -> first index"


@dataclass(frozen=True)
class NadsConfig(Config):
    """``nads:`` parameters (``conf/base/parameters_nads.yml``).

    Attributes:
        activation: replaces the preset's activation (GeLU in every NAD config, docs/methods.md §1.2).
        input_shape: (H, W, C) of the NAD images (docs/methods.md §3.3: 32×32×1); D = H·W·C.
        sigma: std of the evaluation points; 0 → the single point x = 0.
        num_points: B random points when ``sigma > 0``.
        method: "auto" | "dense" | "matrix_free" (``core.nads.nad_gram``).
        memory_budget_bytes: largest dense A (P·D·4 bytes) before going matrix-free.
        chunk_size: input directions per vmapped block; None → from the budget.
        num_plot: NADs drawn in the image grid (figures only).
        progress: tqdm bars.
    """

    SECTION = "nads"

    activation: str = "gelu"
    input_shape: tuple[int, ...] = (32, 32, 1)
    sigma: float = 0.0
    num_points: int = 1
    method: Literal["auto", "dense", "matrix_free"] = "auto"
    memory_budget_bytes: int = nads_core.DEFAULT_MEMORY_BUDGET_BYTES
    chunk_size: int | None = None
    num_plot: int = 16
    progress: bool = True

    def validate(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ConfigError(
                f"nads.input_shape must be [H, W, C] with positive sizes; got "
                f"{list(self.input_shape)}."
            )
        if self.sigma < 0:
            raise ConfigError(f"nads.sigma must be >= 0; got {self.sigma}.")
        for key in ("num_points", "memory_budget_bytes", "num_plot"):
            if getattr(self, key) < 1:
                raise ConfigError(f"nads.{key} must be >= 1; got {getattr(self, key)}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"nads.chunk_size must be >= 1 or null; got {self.chunk_size}.")

    def gram_options(self) -> dict[str, Any]:
        """How ``core.nads.nad_gram`` builds G: method, budget, chunks, progress bars."""
        names = ("method", "memory_budget_bytes", "chunk_size", "progress")
        return {name: getattr(self, name) for name in names}


@dataclass
class NadsResult:
    """What ``compute_nads`` returns.

    Attributes:
        init_variables: θ0 variables ``{'params': ..., ['batch_stats': ...]}`` (NumPy), the
            point the NADs were computed at and ``nad_training`` starts from.
        nads: (D, D) float32; row i is the i-th NAD (flattened H-W-C, unit norm,
            largest-|entry| component positive).
        images: (D, H, W, C) float32, the same rows as images.
        eigenvalues: (D,) float64, descending: σ_i² of A.
        report: JSON-friendly settings, model, seed, accuracy (residuals) and timings.
        model_config: the NAD model (the preset with ``nads.activation``).
    """

    init_variables: dict[str, Any]
    nads: np.ndarray
    images: np.ndarray
    eigenvalues: np.ndarray
    report: dict[str, Any]
    model_config: ModelConfig


def nad_model_config(
    model_config: Mapping[str, Any] | ModelConfig, config: NadsConfig | Mapping[str, Any]
) -> ModelConfig:
    """The shared preset with ``nads.activation``, checked for the NAD input shape.

    ``train_nad_tasks`` derives its model the same way, so both experiments agree.

    Raises:
        ConfigError: the preset is restricted to another input shape.
    """
    config = from_mapping(NadsConfig, config)
    base = ModelConfig.from_dict(model_config).to_dict()
    if base.get("input_shape") is not None and tuple(base["input_shape"]) != config.input_shape:
        raise ConfigError(
            f"Model preset {base['name']!r} is restricted to inputs {tuple(base['input_shape'])} "
            f"but nads.input_shape is {config.input_shape}. Make them equal."
        )
    base["activation"] = config.activation
    model = ModelConfig.from_dict(base)
    model.check_input_shape(config.input_shape)
    return model


def nad_points_key(seed: int) -> jax.Array:
    """Key of the random evaluation points: ``fold_in(key(seed), 1)``.

    The original used PRNGKey(0) whatever the seed (docs/methods.md §4 item 11); here it follows the
    seed, and differs from θ0's key(seed).
    """
    return jax.random.fold_in(jax.random.key(check_seed(seed)), 1)


def _check_variables(variables: Mapping[str, Any], module: Any, model: ModelConfig, shape) -> None:
    expected = jax.eval_shape(lambda: init_variables(module, 0, shape))
    got = jax.tree_util.tree_map(np.shape, dict(variables))
    if got != jax.tree_util.tree_map(lambda a: tuple(a.shape), expected):
        raise ValueError(
            f"The θ0 variables do not match model {model.name!r} ({model.activation}) on "
            f"inputs {shape}; rerun `kedro run --pipelines nads` with the same --params."
        )


def compute_nads(
    model_config: Mapping[str, Any] | ModelConfig,
    config: NadsConfig | Mapping[str, Any],
    seed: int,
    *,
    variables0: Mapping[str, Any] | None = None,
) -> NadsResult:
    """All D NADs of the NAD model at θ0 (docs/methods.md §3.3).

    Args:
        model_config: the shared preset; its activation is replaced by ``config.activation``.
        config: the ``nads`` parameters.
        seed: integer seed: θ0 = init(key(seed), zeros((1, H, W, C))) (docs/methods.md §1.7), and the
            evaluation points' key when ``sigma > 0``.
        variables0: a stored θ0 to use instead of initialising one (it must match the
            model); the NADs then describe that θ0.

    Returns:
        A :class:`NadsResult`.

    Raises:
        ValueError: ReLU-like activations at x = 0 (A ≡ 0, refused before any work),
            variables of another model, a non-integer seed.
    """
    config = from_mapping(NadsConfig, config)
    seed = check_seed(seed)
    model = nad_model_config(model_config, config)
    nads_core.check_nad_activation(model.activation, config.sigma)
    module = build_model(model)
    shape = config.input_shape
    if variables0 is None:
        variables0 = init_variables(module, seed, shape)
    else:
        _check_variables(variables0, module, model, shape)
    variables0 = jax.tree_util.tree_map(np.asarray, dict(variables0))
    logger.info(
        "NADs of %s (%s) on %s inputs: %d parameters",
        model.name,
        model.activation,
        shape,
        count_params(variables0["params"]),
    )
    theta, state = split_variables(variables0)
    points = nads_core.nad_points(shape, config.sigma, config.num_points, nad_points_key(seed))
    result = nads_core.compute_nads(
        scalar_apply(module, state), theta, points, **config.gram_options()
    )
    summary = dict(nads_core.nad_summary(result))
    report = {
        "settings": config.to_dict(),
        "model": model.name,
        "model_config": model.to_dict(),
        "seed": seed,
        "points": {
            "num_points": int(points.shape[0]),
            "key": "x = 0" if config.sigma == 0 else "fold_in(key(seed), 1)",
        },
        "sign_convention": SIGN_CONVENTION,
        "timings": summary.pop("timings_s"),
        **summary,
    }
    images = nads_core.nads_as_images(result.nads, shape).astype(np.float32)
    return NadsResult(
        init_variables=variables0,
        nads=result.nads.astype(np.float32),
        images=images,
        eigenvalues=result.eigenvalues,
        report=report,
        model_config=model,
    )
