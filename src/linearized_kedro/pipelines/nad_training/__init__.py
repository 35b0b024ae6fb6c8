"""nad_training: network vs linearisation on data separable along one NAD (docs/methods.md §3.4)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
