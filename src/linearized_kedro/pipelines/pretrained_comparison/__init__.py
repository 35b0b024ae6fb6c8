"""pretrained_comparison: network vs linear models with the init and the trained kernel (docs/methods.md §3.5)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
