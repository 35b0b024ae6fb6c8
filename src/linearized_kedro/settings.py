"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import os
import warnings

from linearized_kedro.hooks import (
    JaxRuntimeHook,
    ParameterValidationHook,
    ProvenanceHook,
    RunsHook,
    UpstreamArtifactsHook,
)
from linearized_kedro.hooks.config import model_preset

# Known deprecation notices of third-party code we cannot change (Kedro's own calls into
# OmegaConf): three per run, with no action for a user to take.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

# JAX is multithreaded: a process forked after JAX initialised can hang. Kedro's
# ParallelRunner reads this variable to choose how it starts its workers.
os.environ.setdefault("KEDRO_MP_CONTEXT", "spawn")

# Before the first node, pluggy calls the hook registered *last* first: parameters are
# validated (a bad command writes nothing), then the run claims its id and pins its
# inputs to complete upstream runs (hooks/runs.py), then missing upstream artifacts are
# reported; every artifact gets its provenance last (hooks/provenance.py, `trylast`).
# Figures need no hook: they are built without pyplot (no global state).
HOOKS = (
    JaxRuntimeHook(),
    UpstreamArtifactsHook(),
    ProvenanceHook(),
    RunsHook(),
    ParameterValidationHook(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `conf/<env>` overrides single keys (e.g. `ntk.num_eigvecs`) instead of whole blocks.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # `model_config: ${model_preset:${model}}` in parameters.yml (an unknown model is an
    # error listing the presets).
    "custom_resolvers": {"model_preset": model_preset},
}
