"""Wiring of ``data``."""

from kedro.pipeline import Node, Pipeline

from .nodes import load_and_prepare_data


def create_pipeline(**kwargs) -> Pipeline:
    """``raw_images`` + ``params:data`` → prepared inputs, labels, sample order, report."""
    return Pipeline(
        [
            Node(
                load_and_prepare_data,
                ["raw_images", "params:data"],
                ["prepared_inputs", "prepared_labels", "sample_index", "data_report"],
                name="load_and_prepare_data",
            ),
        ]
    )
