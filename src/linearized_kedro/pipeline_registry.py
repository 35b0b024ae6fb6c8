"""Project pipelines.

Every pipeline package's ``create_pipeline()`` is registered under its package name. An
experiment that reads the prepared data (``prepared_*``, ``data_report``) is registered
together with the ``data`` pipeline, so ``kedro run --pipelines ntk_spectrum`` works on a
fresh checkout; downstream experiments read their upstream artifacts from the catalog
(the latest complete run for the same dataset and model, or ``--load-versions``), checked
before the run by ``hooks.upstream``. ``__default__`` is every pipeline; Kedro orders its
nodes by their data dependencies, so ``reporting`` runs after the experiments it reads.
"""

from __future__ import annotations

import importlib
import pkgutil

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

import linearized_kedro.pipelines as pipelines_package


def all_pipelines() -> dict[str, Pipeline]:
    """Every pipeline package's ``create_pipeline()``, whatever the CLI requested."""
    found = {}
    for info in pkgutil.iter_modules(pipelines_package.__path__):
        if info.ispkg:
            module = importlib.import_module(f"{pipelines_package.__name__}.{info.name}")
            found[info.name] = module.create_pipeline()
    return found


def with_data(name: str, pipeline: Pipeline, data: Pipeline) -> Pipeline:
    """``pipeline`` preceded by the ``data`` pipeline when it reads the prepared data."""
    if name != "data" and pipeline.inputs() & data.all_outputs():
        return data + pipeline
    return pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Registers every pipeline; ``__default__`` runs them all.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    found = find_pipelines(raise_errors=True)
    # Imported directly: `kedro run --pipelines X` makes find_pipelines load X only.
    from linearized_kedro.pipelines.data import create_pipeline as data_pipeline

    data = data_pipeline()
    pipelines = {
        name: with_data(name, p, data) for name, p in found.items() if name != "__default__"
    }
    if "__default__" in found:  # all pipelines were loaded
        pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
