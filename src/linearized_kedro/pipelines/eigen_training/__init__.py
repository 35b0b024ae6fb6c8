"""eigen_training: train networks and linearisations on binarised NTK eigenfunctions (docs/methods.md §3.2)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
