"""Wiring of ``nads``."""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures

from .nodes import compute, plot_nads


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                compute,
                ["params:model_config", "params:nads", "params:seed"],
                [
                    "nads_init_params",
                    "nads_directions",
                    "nads_images",
                    "nads_eigenvalues",
                    "nads_report",
                ],
                name="compute_nads",
            ),
            Node(
                plot_nads,
                ["nads_images", "nads_report", "params:nads"],
                "nads_directions_plot",
                name="plot_nads",
            ),
            Node(
                figures.nad_spectrum_plot,
                ["nads_eigenvalues", "nads_report"],
                "nads_spectrum_plot",
                name="plot_spectrum",
            ),
        ],
        namespace="nads",
        prefix_datasets_with_namespace=False,
    )
