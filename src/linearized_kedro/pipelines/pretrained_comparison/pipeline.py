"""Wiring of ``pretrained_comparison``."""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures
from linearized_kedro.experiments.eigen_tasks import StoredSpectrum

from .nodes import compare_init_and_pretrained_kernels


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                compare_init_and_pretrained_kernels,
                StoredSpectrum.node_inputs(
                    "model_config", "pretrained_comparison", "label_idx", "seed"
                ),
                [
                    "pretrained_comparison_results",
                    "pretrained_comparison_histories",
                    "pretrained_comparison_trained_params",
                ],
                name="compare_kernels",
            ),
            Node(
                figures.comparison_plot,
                "pretrained_comparison_results",
                "pretrained_comparison_plot",
                name="plot_comparison",
            ),
        ],
        namespace="pretrained_comparison",
        prefix_datasets_with_namespace=False,
    )
