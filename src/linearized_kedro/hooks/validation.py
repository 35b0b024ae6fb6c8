"""Parameters checked across blocks before the first node runs, so a bad command writes nothing.

Kedro itself builds every typed parameter block (``core.config.Config``) before a run, which
checks each block on its own: types, ranges, unknown keys. What a block cannot check alone is
checked here, from the configuration and the dataset registry only (no data is read):

- the dataset and model names are known (the error lists the valid ones);
- ``ntk.num_eigvecs`` (and Nyström landmarks) below N = num_train + num_test of the
  configured data;
- eigen-indices below the spectrum's k (this run's ``ntk.num_eigvecs`` when ``ntk_spectrum``
  runs too, else the stored spectrum's report);
- NAD indices below D, CIFAR-2 sizes within the prepared training rows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from kedro.framework.hooks import hook_impl

from linearized_kedro.core.config import ConfigError

logger = logging.getLogger(__name__)


def _params(pipeline: Any) -> set[str]:
    return {name for node in pipeline.nodes for name in node.inputs if name.startswith("params:")}


def _data_sizes(data: Any) -> tuple[int, int]:
    from linearized_kedro.datasets.raw import dataset_spec

    spec = dataset_spec(data.dataset)
    return data.sizes(spec.num_train, spec.num_test)


def _spectrum_k(catalog: Any, pipeline: Any) -> tuple[int | None, str]:
    """k of the spectrum the run will use, and where it comes from."""
    if "ntk_eigenvalues" in pipeline.all_outputs():
        return int(catalog.load("params:ntk").num_eigvecs), "ntk.num_eigvecs of this run"
    if catalog.exists("ntk_report"):
        return int(catalog.load("ntk_report")["k"]), "the stored spectrum (ntk_report)"
    return None, ""


def validate_run(pipeline: Any, catalog: Any) -> None:
    """Raises ConfigError for the first cross-block inconsistency of this run's parameters."""
    from linearized_kedro.core.models import model_config
    from linearized_kedro.experiments.common import (
        check_indices_below,
        check_seed,
        with_shortcuts,
    )

    params = _params(pipeline)
    if "params:seed" in params:
        check_seed(catalog.load("params:seed"))
    if "params:model_config" in params:
        model_config(catalog.load("params:model_config"))
    label_idx = catalog.load("params:label_idx") if "params:label_idx" in params else None
    linearize = catalog.load("params:linearize") if "params:linearize" in params else None
    data = catalog.load("params:data") if "params:data" in params else None
    sizes = _data_sizes(data) if data is not None else None
    if "params:ntk" in params and sizes is not None:
        ntk = catalog.load("params:ntk")
        n = sum(sizes)
        if int(ntk.num_eigvecs) >= n:
            raise ConfigError(
                f"ntk.num_eigvecs={ntk.num_eigvecs} must be smaller than the number of samples "
                f"N={n} (data.num_train + data.num_test = {sizes[0]} + {sizes[1]} on "
                f"{data.dataset}). Lower ntk.num_eigvecs or use more samples."
            )
    k, where = _spectrum_k(catalog, pipeline)
    for block in ("eigen_training", "pretrained_comparison"):
        if f"params:{block}" in params and k is not None:
            config = with_shortcuts(catalog.load(f"params:{block}"), label_idx, linearize)
            check_indices_below(
                config.indices,
                k,
                f"{block}.label_idx (or label_idx=)",
                f"k={k} from {where}",
                "Use smaller indices or rerun ntk_spectrum with a larger ntk.num_eigvecs.",
            )
    nad_training = catalog.load("params:nad_training") if "params:nad_training" in params else None
    if hasattr(nad_training, "indices") and "params:nads" in params:
        nads = catalog.load("params:nads")
        config = with_shortcuts(nad_training, label_idx, linearize)
        dim = int(np.prod(nads.input_shape))
        check_indices_below(
            config.indices,
            dim,
            "nad_training.label_idx (or label_idx=)",
            f"nads.input_shape {list(nads.input_shape)} gives D = H·W·C = {dim} NADs",
        )
    if "params:cifar2" in params and sizes is not None:
        from linearized_kedro.datasets.raw import dataset_spec

        catalog.load("params:cifar2").sizes(sizes[0], dataset_spec(data.dataset).num_classes)


class ParameterValidationHook:
    """Runs :func:`validate_run` before the pipeline (module docstring)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        validate_run(pipeline, catalog)
