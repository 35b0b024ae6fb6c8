"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import os

from linearized_kedro.hooks import (
    CloseFiguresHook,
    JaxRuntimeHook,
    ProvenanceHook,
    RunsHook,
    UpstreamArtifactsHook,
)

# JAX is multithreaded: a process forked after JAX initialised can hang. Kedro's
# ParallelRunner reads this variable to choose how it starts its workers.
os.environ.setdefault("KEDRO_MP_CONTEXT", "spawn")

# RunsHook claims the run's id and pins its inputs before any other hook looks at the
# catalog (`tryfirst`); see hooks/runs.py.
HOOKS = (
    JaxRuntimeHook(),
    RunsHook(),
    ProvenanceHook(),
    UpstreamArtifactsHook(),
    CloseFiguresHook(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # `conf/<env>` overrides single keys (e.g. `ntk.num_eigvecs`) instead of whole blocks.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
