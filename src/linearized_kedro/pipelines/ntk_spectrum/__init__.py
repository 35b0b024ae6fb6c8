"""ntk_spectrum: θ0 → empirical NTK Gram → top-k eigenpairs (docs/methods.md §3.1)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
