"""Project pipelines.

Each experiment pipeline that reads prepared data is registered together with the
``data`` pipeline, so ``kedro run --pipelines ntk_spectrum`` works on a fresh checkout.
Downstream experiments (``eigen_training``, ``pretrained_comparison``,
``nad_training``, ``reporting``) load their upstream artifacts from the catalog
(latest version for the same dataset and model, or ``--load-versions``).
"""

from __future__ import annotations

import importlib
import pkgutil

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

import linearized_kedro.pipelines as pipelines_package

# Pipelines that consume the prepared dataset of `data.dataset`.
NEEDS_DATA = ("ntk_spectrum", "eigen_training", "pretrained_comparison", "cifar2")


def _data_pipeline() -> Pipeline:
    # Imported directly: `kedro run --pipelines X` makes find_pipelines load X only.
    from linearized_kedro.pipelines.data import create_pipeline

    return create_pipeline()


def all_pipelines() -> dict[str, Pipeline]:
    """Every pipeline package's ``create_pipeline()``, whatever the CLI requested."""
    found = {}
    for info in pkgutil.iter_modules(pipelines_package.__path__):
        if info.ispkg:
            module = importlib.import_module(f"{pipelines_package.__name__}.{info.name}")
            found[info.name] = module.create_pipeline()
    return found


def register_pipelines() -> dict[str, Pipeline]:
    """Registers every pipeline; ``__default__`` runs all experiments in order.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    found = find_pipelines(raise_errors=True)
    pipelines = dict(found)
    for name in NEEDS_DATA:
        if name in found:
            pipelines[name] = _data_pipeline() + found[name]
    if "__default__" in found:  # all pipelines were loaded
        pipelines["__default__"] = sum(
            (p for name, p in found.items() if name != "__default__"), Pipeline([])
        )
    return pipelines
