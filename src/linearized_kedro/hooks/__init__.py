"""Session hooks, one module per concern (registered in ``settings.py``)."""

from linearized_kedro.hooks.provenance import RunMetadataHook
from linearized_kedro.hooks.runtime import JaxRuntimeHook, configure_jax
from linearized_kedro.hooks.upstream import UpstreamArtifactsHook
from linearized_kedro.hooks.validation import ParameterValidationHook

__all__ = [
    "JaxRuntimeHook",
    "ParameterValidationHook",
    "RunMetadataHook",
    "UpstreamArtifactsHook",
    "configure_jax",
]
