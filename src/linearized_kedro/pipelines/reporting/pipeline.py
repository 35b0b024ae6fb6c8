"""Wiring of ``reporting``: every experiment's artifacts, through the catalog, to one summary.

The summary node reads the experiments' own catalog entries (so ``--load-versions`` pins
apply and Kedro-Viz draws the lineage) and, for the result tables and the alignment, every
saved version of them (``<artifact>_history``: a ``PartitionedDataset`` over the version
folders), so results of the same settings accumulate across runs (``history``). An
experiment that has not run reads as ``None`` (``hooks.upstream``).
"""

from kedro.pipeline import Node, Pipeline

from linearized_kedro.hooks.upstream import TOLERATES_MISSING, VERSIONS_DATASET

from .nodes import EXPERIMENTS, history_inputs, summarize_experiments


def create_pipeline(**kwargs) -> Pipeline:
    artifacts = {name: name for e in EXPERIMENTS for name in e.artifacts}
    histories = {name: name for name in history_inputs()}
    return Pipeline(
        [
            Node(
                summarize_experiments,
                {
                    "artifact_versions": VERSIONS_DATASET,
                    "data": "params:data",
                    "model": "params:model",
                    "reporting": "params:reporting",
                    **artifacts,
                    **histories,
                },
                ["summary_markdown", "summary_html", "summary_plot"],
                name="summarize_experiments",
                tags=[TOLERATES_MISSING],
            ),
        ],
        namespace="reporting",
        prefix_datasets_with_namespace=False,
    )
