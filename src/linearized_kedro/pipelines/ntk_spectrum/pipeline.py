"""Wiring of ``ntk_spectrum``."""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures

from .nodes import init_network, record_sample_index, release_gram_tiles, spectrum


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                init_network,
                ["params:model_config", "data_report", "params:seed"],
                "ntk_init_params",
                name="init_network",
            ),
            Node(
                record_sample_index,
                "prepared_sample_index",
                "ntk_sample_index",
                name="record_sample_index",
            ),
            Node(
                spectrum,
                [
                    "prepared_inputs",
                    "ntk_init_params",
                    "params:model_config",
                    "data_report",
                    "params:ntk",
                    "params:seed",
                    "ntk_gram_tiles",
                ],
                ["ntk_eigenvalues", "ntk_eigenvectors", "ntk_report"],
                name="compute_spectrum",
            ),
            Node(
                release_gram_tiles,
                ["ntk_report", "ntk_gram_tiles"],
                None,
                name="release_gram_tiles",
            ),
            Node(
                figures.spectrum_plot,
                ["ntk_eigenvalues", "ntk_report"],
                "ntk_spectrum_plot",
                name="plot_spectrum",
            ),
            Node(
                figures.spectrum_plotly,
                ["ntk_eigenvalues", "ntk_report"],
                "ntk_spectrum_figure",
                name="draw_spectrum",
            ),
        ],
        namespace="ntk_spectrum",
        prefix_datasets_with_namespace=False,
    )
