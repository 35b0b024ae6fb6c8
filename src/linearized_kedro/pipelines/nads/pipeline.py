"""Wiring of ``nads``."""

from kedro.pipeline import Node, Pipeline

from .nodes import compute_nads, init_nad_network, plot_nad_spectrum, plot_nads


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                init_nad_network,
                ["params:model_config", "params:nads", "params:seed"],
                "nads_init_params",
                name="init_network",
            ),
            Node(
                compute_nads,
                ["nads_init_params", "params:model_config", "params:nads", "params:seed"],
                ["nads_directions", "nads_images", "nads_eigenvalues", "nads_report"],
                name="compute_nads",
            ),
            Node(
                plot_nads,
                ["nads_images", "nads_report", "params:nads"],
                "nads_directions_plot",
                name="plot_nads",
            ),
            Node(
                plot_nad_spectrum,
                ["nads_eigenvalues", "nads_report"],
                "nads_spectrum_plot",
                name="plot_spectrum",
            ),
        ],
        namespace="nads",
        prefix_datasets_with_namespace=False,
    )
