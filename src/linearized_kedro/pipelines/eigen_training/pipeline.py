"""Wiring of ``eigen_training``.

Tags split the pipeline for job arrays (docs/scaling.md): ``eigen_training_sweep`` trains
one partition of the index list into ``eigen_training_partitions``; ``eigen_training_merge``
merges every partition into ``eigen_training_results`` and draws the main figure. A plain
run does both, with one partition.
"""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures
from linearized_kedro.experiments.eigen_tasks import StoredSpectrum

from .nodes import measure_alignment, merge_partitions, train_partition


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_partition,
                StoredSpectrum.node_inputs(
                    "model_config", "eigen_training", "label_idx", "linearize", "seed"
                ),
                [
                    "eigen_training_partitions",
                    "eigen_training_histories",
                    "eigen_training_trained_params",
                ],
                name="train_on_eigenfunctions",
                tags=["eigen_training_sweep"],
            ),
            Node(
                measure_alignment,
                StoredSpectrum.node_inputs(
                    "model_config",
                    "eigen_training",
                    eigen_training_trained_params="eigen_training_trained_params",
                ),
                "eigen_training_alignment",
                name="measure_kernel_alignment",
                tags=["eigen_training_sweep"],
            ),
            Node(
                merge_partitions,
                [
                    "eigen_training_partitions",
                    "params:eigen_training",
                    "params:label_idx",
                    "params:linearize",
                ],
                "eigen_training_results",
                name="merge_partitions",
                tags=["eigen_training_merge"],
            ),
            Node(
                figures.eigen_accuracy_plot,
                "eigen_training_results",
                "eigen_training_accuracy_plot",
                name="plot_accuracy_vs_index",
                tags=["eigen_training_merge"],
            ),
            Node(
                figures.eigen_accuracy_plotly,
                "eigen_training_results",
                "eigen_training_accuracy_figure",
                name="draw_accuracy_vs_index",
                tags=["eigen_training_merge"],
            ),
            Node(
                figures.alignment_plot,
                "eigen_training_alignment",
                "eigen_training_alignment_plot",
                name="plot_kernel_alignment",
                tags=["eigen_training_sweep"],
            ),
            Node(
                figures.alignment_plotly,
                "eigen_training_alignment",
                "eigen_training_alignment_figure",
                name="draw_kernel_alignment",
                tags=["eigen_training_sweep"],
            ),
        ],
        namespace="eigen_training",
        prefix_datasets_with_namespace=False,
    )
