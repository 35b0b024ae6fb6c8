"""reporting: every experiment's results (accumulated over runs of one setting) → one summary."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
