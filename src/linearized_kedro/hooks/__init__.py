"""Session hooks, one module per concern (registered in ``settings.py``)."""

from linearized_kedro.hooks.provenance import ProvenanceHook, RunMetadataHook
from linearized_kedro.hooks.runs import RunsHook
from linearized_kedro.hooks.runtime import CollectorHook, JaxRuntimeHook, configure_jax
from linearized_kedro.hooks.upstream import UpstreamArtifactsHook
from linearized_kedro.hooks.validation import ParameterValidationHook

__all__ = [
    "CollectorHook",
    "JaxRuntimeHook",
    "ParameterValidationHook",
    "ProvenanceHook",
    "RunMetadataHook",
    "RunsHook",
    "UpstreamArtifactsHook",
    "configure_jax",
]
