"""Project pipelines.

Each experiment pipeline that reads prepared data is registered together with the
``data`` pipeline, so ``kedro run --pipelines ntk_spectrum`` works on a fresh checkout.
Downstream experiments (``eigen_training``, ``pretrained_comparison``,
``nad_training``, ``reporting``) load their upstream artifacts from the catalog
(latest version for the same dataset and model, or ``--load-versions``).
"""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# Pipelines that consume the prepared dataset of `data.dataset`.
_NEEDS_DATA = ("ntk_spectrum", "eigen_training", "pretrained_comparison", "cifar2")


def register_pipelines() -> dict[str, Pipeline]:
    """Registers every pipeline; ``__default__`` runs all experiments in order.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    found = find_pipelines(raise_errors=True)
    pipelines = dict(found)
    data = found.get("data", Pipeline([]))
    for name in _NEEDS_DATA:
        if name in found:
            pipelines[name] = data + found[name]
    pipelines["__default__"] = sum(found.values(), Pipeline([]))
    return pipelines
