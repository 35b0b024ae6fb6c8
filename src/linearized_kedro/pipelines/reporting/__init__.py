"""reporting: the latest result of every experiment → one Markdown/HTML summary + figure."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
