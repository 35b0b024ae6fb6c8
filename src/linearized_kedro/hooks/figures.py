"""Figures: close matplotlib figures once the catalog has saved them."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl


class CloseFiguresHook:
    """Closes a matplotlib figure once the catalog has saved it (nodes return figures)."""

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        from matplotlib.figure import Figure

        if isinstance(data, Figure):
            import matplotlib.pyplot as plt

            plt.close(data)
