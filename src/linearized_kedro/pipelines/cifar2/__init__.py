"""cifar2: network vs linearisation on classes 0-4 vs 5-9, swept over training-set sizes (docs/methods.md §3.6)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
