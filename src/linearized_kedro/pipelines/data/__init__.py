"""data: official raw files → normalised, subset, concatenated NTK data set + sample order (docs/methods.md §1.1)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
