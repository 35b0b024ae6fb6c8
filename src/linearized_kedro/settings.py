"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import os
import warnings

from omegaconf.resolvers import oc

from linearized_kedro.hooks import (
    CollectorHook,
    JaxRuntimeHook,
    ParameterValidationHook,
    ProvenanceHook,
    RunsHook,
    UpstreamArtifactsHook,
)
from linearized_kedro.hooks.config import model_preset
from linearized_kedro.hooks.tracking import PLUGIN as TRACKING_PLUGIN
from linearized_kedro.hooks.tracking import tracking_hooks

# Known deprecation notices of third-party code we cannot change (Kedro's own calls into
# OmegaConf): three per run, with no action for a user to take.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)
# Kedro-Viz 12.5's import of a FastAPI response class FastAPI now deprecates (every
# `kedro viz` / `kedro view` start).
warnings.filterwarnings("ignore", message=r"ORJSONResponse is deprecated")
# MLflow about its own model wrapper, on import of kedro-mlflow's hook (the [mlflow] extra).
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")

# JAX is multithreaded: a process forked after JAX initialised can hang. Kedro's
# ParallelRunner reads this variable to choose how it starts its workers.
os.environ.setdefault("KEDRO_MP_CONTEXT", "spawn")

# Before the first node, pluggy calls the hook registered *last* first: parameters are
# validated (a bad command writes nothing), then the run claims its id and pins its
# inputs to complete upstream runs (hooks/runs.py), then missing upstream artifacts are
# reported; every artifact gets its provenance last (hooks/provenance.py, `trylast`).
# Tracking (hooks/tracking.py, when kedro-mlflow is installed) is registered first, so its
# MLflow run starts after all checks passed. Figures need no hook: they are built without
# pyplot (no global state).
HOOKS = (
    *tracking_hooks(),
    JaxRuntimeHook(),
    CollectorHook(),
    UpstreamArtifactsHook(),
    ProvenanceHook(),
    RunsHook(),
    ParameterValidationHook(),
)

# kedro-mlflow's own hook logs typed parameter blocks as reprs; TrackingHook drives it.
DISABLE_HOOKS_FOR_PLUGINS = (TRACKING_PLUGIN,)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `conf/<env>` overrides single keys (e.g. `ntk.num_eigvecs`) instead of whole blocks.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # `model_config: ${model_preset:${model}}` in parameters.yml (an unknown model is an
    # error listing the presets); `${oc.env:...}` in globals.yml (Kedro enables it only for
    # credentials): LINEARIZED_KEDRO_MODEL / _DATASET choose the default run.
    "custom_resolvers": {"model_preset": model_preset, "oc.env": oc.env},
}
