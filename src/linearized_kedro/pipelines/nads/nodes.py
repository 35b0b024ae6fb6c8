"""Nodes of ``nads``: θ0 of the NAD model → all NADs of ∂²f/∂θ∂x → arrays, report, figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from linearized_kedro.core import nads as nads_core  # noqa: E402
from linearized_kedro.core.config import dataclass_from_mapping  # noqa: E402
from linearized_kedro.core.models import (  # noqa: E402
    ModelConfig,
    build_model,
    count_params,
    init_variables,
    scalar_apply,
    split_variables,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NadsParams:
    """``nads:`` parameters (``conf/base/parameters_nads.yml``).

    Attributes:
        activation: replaces the preset's activation (GeLU in every NAD config, SPEC §1.2).
        input_shape: (H, W, C) of the NAD images (SPEC §3.3: 32×32×1).
        sigma: std of the evaluation points; 0 → the single point x = 0.
        num_points: B random points when ``sigma > 0``.
        method: "auto" | "dense" | "matrix_free" (``core.nads.nad_gram``).
        memory_budget_bytes: largest dense A (P·D·4 bytes) before going matrix-free.
        chunk_size: input directions per vmapped block; null → from the budget.
        num_plot: NADs drawn in the image grid (16-32).
        progress: tqdm bars.
    """

    activation: str = "gelu"
    input_shape: tuple[int, int, int] | list[int] = (32, 32, 1)
    sigma: float = 0.0
    num_points: int = 1
    method: str = "auto"
    memory_budget_bytes: int = nads_core.DEFAULT_MEMORY_BUDGET_BYTES
    chunk_size: int | None = None
    num_plot: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        shape = tuple(int(v) for v in self.input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"nads.input_shape must be [H, W, C]; got {self.input_shape}.")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "sigma", float(self.sigma))
        if self.sigma < 0:
            raise ValueError(f"nads.sigma must be >= 0; got {self.sigma}.")
        if int(self.num_points) < 1:
            raise ValueError(f"nads.num_points must be >= 1; got {self.num_points}.")
        if int(self.memory_budget_bytes) < 1:
            raise ValueError(
                f"nads.memory_budget_bytes must be positive; got {self.memory_budget_bytes}."
            )
        if self.method not in ("auto", "dense", "matrix_free"):
            raise ValueError(
                f"nads.method must be auto, dense or matrix_free; got {self.method!r}."
            )
        if int(self.num_plot) < 1:
            raise ValueError(f"nads.num_plot must be >= 1; got {self.num_plot}.")

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | NadsParams) -> NadsParams:
        """Accepts the dataclass (Kedro's typed params) or a plain mapping (tests)."""
        return dataclass_from_mapping(cls, value, "nads")


def nad_model_config(model_config: Mapping[str, Any] | ModelConfig, nads: Any) -> ModelConfig:
    """The shared preset with ``nads.activation`` and the NAD input shape (SPEC §3.3).

    ``nad_training`` derives its model the same way, so both pipelines agree.
    """
    params = NadsParams.from_value(nads)
    base = ModelConfig.from_dict(model_config).to_dict()
    if base.get("input_shape") is not None and tuple(base["input_shape"]) != params.input_shape:
        raise ValueError(
            f"Model preset {base['name']!r} is restricted to inputs {tuple(base['input_shape'])} "
            f"but nads.input_shape is {params.input_shape}. Make them equal."
        )
    base["activation"] = params.activation
    config = ModelConfig.from_dict(base)
    config.check_input_shape(params.input_shape)
    return config


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"'seed' must be an integer; got {seed!r}.")
    return int(seed)


def init_nad_network(model_config: ModelConfig, nads: NadsParams, seed: int) -> dict:
    """θ0 of the NAD model: init(key(seed), zeros((1, H, W, C))) (SPEC §1.7, §3.3 step 1).

    Args:
        model_config: the shared preset (``params:model_config``).
        nads: the ``nads`` parameters (activation override and input shape).
        seed: integer seed.

    Returns:
        Variables ``{'params': ..., ['batch_stats': ...]}`` as NumPy arrays.
    """
    params = NadsParams.from_value(nads)
    config = nad_model_config(model_config, params)
    # Refuse ReLU at x = 0 before any work (SPEC §4 item 11).
    nads_core.check_nad_activation(config.activation, params.sigma)
    variables = init_variables(build_model(config), _check_seed(seed), params.input_shape)
    logger.info(
        "θ0 of %s (%s) on %s NAD inputs: %d parameters",
        config.name,
        config.activation,
        params.input_shape,
        count_params(variables["params"]),
    )
    return jax.tree_util.tree_map(np.asarray, variables)


def nad_points_key(seed: int) -> jax.Array:
    """Key of the random evaluation points: ``fold_in(key(seed), 1)``.

    The original used PRNGKey(0) whatever the seed (SPEC §4 item 11); here it follows the
    seed, and differs from θ0's key(seed).
    """
    return jax.random.fold_in(jax.random.key(_check_seed(seed)), 1)


def compute_nads(
    nads_init_params: dict, model_config: ModelConfig, nads: NadsParams, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """All D NADs of the NAD model at θ0 (SPEC §3.3).

    Args:
        nads_init_params: θ0 variables from ``init_nad_network``.
        model_config: the shared preset; its activation is replaced by ``nads.activation``.
        nads: the ``nads`` parameters.
        seed: integer seed (evaluation points when ``nads.sigma > 0``).

    Returns:
        ``nads`` (D, D) float32 rows (i-th NAD, flattened H-W-C, unit norm, largest-|entry|
        positive), ``nads_images`` (D, H, W, C) float32, ``nad_eigenvalues`` (D,) float64
        descending (σ_i² of A), and a JSON report.
    """
    params = NadsParams.from_value(nads)
    config = nad_model_config(model_config, params)
    nads_core.check_nad_activation(config.activation, params.sigma)
    module = build_model(config)
    expected = jax.eval_shape(lambda: init_variables(module, 0, params.input_shape))
    got = jax.tree_util.tree_map(np.shape, nads_init_params)
    if got != jax.tree_util.tree_map(lambda a: tuple(a.shape), expected):
        raise ValueError(
            f"nads_init_params do not match model {config.name!r} ({config.activation}) on "
            f"inputs {params.input_shape}; rerun `kedro run --pipelines nads` with the same "
            "--params."
        )
    theta, state = split_variables(nads_init_params)
    points = nads_core.nad_points(
        params.input_shape, params.sigma, params.num_points, nad_points_key(seed)
    )
    result = nads_core.compute_nads(
        scalar_apply(module, state),
        jax.tree_util.tree_map(np.asarray, theta),
        points,
        memory_budget_bytes=int(params.memory_budget_bytes),
        chunk_size=params.chunk_size,
        method=params.method,
        progress=params.progress,
    )
    summary = dict(nads_core.nad_summary(result))
    settings = asdict(params)
    settings["input_shape"] = list(params.input_shape)
    report = {
        "settings": settings,
        "model": config.name,
        "model_config": config.to_dict(),
        "seed": _check_seed(seed),
        "points": {
            "num_points": int(points.shape[0]),
            "key": "x = 0" if params.sigma == 0 else "fold_in(key(seed), 1)",
        },
        "sign_convention": "largest-|entry| component positive; ties -> first index",
        "timings": summary.pop("timings_s"),
        **summary,
    }
    images = nads_core.nads_as_images(result.nads, params.input_shape).astype(np.float32)
    return result.nads.astype(np.float32), images, result.eigenvalues, report


def plot_nads(nads_images: np.ndarray, nads_report: dict[str, Any], nads: NadsParams):
    """The first NADs as images (rows 1-2) and their centred |FFT2| (rows 3-4), channel 0."""
    params = NadsParams.from_value(nads)
    images = np.asarray(nads_images, np.float64)[: params.num_plot]
    spectra = nads_core.fourier_magnitudes(images)
    count = images.shape[0]
    cols = min(8, count)
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(1.5 * cols, 1.6 * 2 * rows + 0.5), squeeze=False
    )
    for i in range(rows * cols):
        top, bottom = axes[i // cols, i % cols], axes[rows + i // cols, i % cols]
        if i >= count:
            top.remove()
            bottom.remove()
            continue
        bound = float(np.max(np.abs(images[i, ..., 0]))) or 1.0
        top.imshow(images[i, ..., 0], cmap="RdBu_r", vmin=-bound, vmax=bound)
        bottom.imshow(spectra[i, ..., 0], cmap="magma")
        top.set_title(f"NAD {i}", fontsize=7)
        bottom.set_title(f"|FFT| {i}", fontsize=7)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    cfg = nads_report.get("model_config", {})
    settings = nads_report.get("settings", {})
    fig.suptitle(
        f"NADs of {cfg.get('name')} ({cfg.get('activation')}), σ={settings.get('sigma')}: "
        "images (top) and |FFT2| (bottom)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_nad_spectrum(nad_eigenvalues: np.ndarray, nads_report: dict[str, Any]):
    """Eigenvalue decay of AᵀA (σ_i² of the mixed derivative), semilogy."""
    values = np.asarray(nad_eigenvalues, np.float64)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    positive = values > 0
    ax.semilogy(np.flatnonzero(positive), values[positive], lw=1.2)
    zero = int(nads_report.get("num_zero_eigenvalues", 0))
    if zero:
        ax.axvline(
            values.size - zero, color="gray", ls="--", lw=1, label=f"{zero} numerically zero"
        )
        ax.legend(fontsize=8)
    cfg = nads_report.get("model_config", {})
    ax.set_xlabel("NAD index i")
    ax.set_ylabel("σ_i² (eigenvalue of AᵀA)")
    ax.set_title(f"NAD spectrum: {cfg.get('name')} ({cfg.get('activation')}), D={values.size}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
