"""Wiring of ``reporting``."""

from kedro.pipeline import Node, Pipeline

from .nodes import summarize_experiments


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                summarize_experiments,
                ["experiment_results", "params:data", "params:model", "params:reporting"],
                ["summary_report", "summary_report_html", "summary_figure"],
                name="summarize_experiments",
            ),
        ]
    )
