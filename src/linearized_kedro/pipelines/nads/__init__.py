"""nads: all neural anisotropy directions of the NAD model at θ0 (docs/methods.md §3.3)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
