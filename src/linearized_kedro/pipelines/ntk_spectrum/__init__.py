"""ntk_spectrum: θ0 → empirical NTK Gram → top-k eigenpairs (SPEC §3.1)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
