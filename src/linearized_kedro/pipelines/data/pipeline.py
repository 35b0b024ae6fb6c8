"""Wiring of ``data``."""

from kedro.pipeline import Node, Pipeline

from .nodes import prepare


def create_pipeline(**kwargs) -> Pipeline:
    """``raw_images`` + ``params:data`` → prepared inputs, labels, sample order, report."""
    return Pipeline(
        [
            Node(
                prepare,
                ["raw_images", "params:data"],
                [
                    "prepared_inputs",
                    "prepared_labels",
                    "prepared_sample_index",
                    "data_report",
                ],
                name="prepare_data",
            ),
        ],
        namespace="data",
        prefix_datasets_with_namespace=False,
    )
