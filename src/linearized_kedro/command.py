"""How a run is written as a command line: ``kedro run`` options from a run's settings.

Used where a run must be reproducible from what is shown: Kedro-Viz's run commands
(``linearized_kedro.viz``) and the command recorded with a tracked run
(``hooks/tracking.py``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

#: Parameters that select the run (every artifact path depends on them), written first.
SELECTION = ("model", "data.dataset")
#: ``kedro run`` options of the run parameters Kedro hands to hooks (``run_params``).
_RUN_OPTIONS = (
    ("pipeline_names", "--pipelines"),
    ("node_names", "--nodes"),
    ("tags", "--tags"),
    ("from_nodes", "--from-nodes"),
    ("to_nodes", "--to-nodes"),
    ("from_inputs", "--from-inputs"),
    ("to_outputs", "--to-outputs"),
    ("namespaces", "--namespaces"),
)


def pipeline_names(run_params: Mapping[str, Any]) -> list[str]:
    """The run's pipelines, sorted: ``kedro run --pipelines a,b`` hands hooks
    ``list(set(...))``, whose order changes from process to process."""
    return sorted(run_params.get("pipeline_names") or [])


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"dataset": "digits"}}`` → ``{"data.dataset": "digits"}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _cli_value(value: Any) -> str:
    """A parameter value as ``kedro run --params`` reads it back (YAML scalars)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def configuration_arguments(
    parameters: Mapping[str, Any], env: str | None, params: Mapping[str, Any] | None
) -> str:
    """The ``--params``/``--env`` that give a run's configuration on any checkout.

    The selection (model, dataset) is written out even when it came from a default
    (``globals.yml``, ``LINEARIZED_KEDRO_MODEL``/``_DATASET``), so the command does not
    depend on the environment it is pasted into.

    Args:
        parameters: the run's resolved parameters (plain mappings and scalars).
        env: the Kedro environment (``None`` or ``"local"``: the default, not written).
        params: the run's ``--params`` (nested, as Kedro parses them).

    Returns:
        E.g. ``"--params model=lenet,data.dataset=digits --env test"``.
    """
    flat = flatten(parameters)
    chosen = {key: flat[key] for key in SELECTION if key in flat}
    chosen.update(flatten(params or {}))
    pairs = ",".join(f"{key}={_cli_value(value)}" for key, value in chosen.items())
    arguments = f"--params {shlex.quote(pairs)}"
    if env and env != "local":
        arguments += f" --env {shlex.quote(env)}"
    return arguments


def run_command(run_params: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    """The ``kedro run`` command line of a run, from the ``run_params`` Kedro gives hooks.

    Args:
        run_params: Kedro's run parameters (``pipeline_names``, ``to_nodes``, ``env``,
            ``runtime_params``, ``load_versions``, ``runner``, ...).
        parameters: the run's resolved parameters (for the selection, see
            :func:`configuration_arguments`).
    """
    parts = ["kedro", "run"]
    for key, option in _RUN_OPTIONS:
        values = pipeline_names(run_params) if key == "pipeline_names" else run_params.get(key)
        if values and list(values) != ["__default__"]:
            parts.append(f"{option}={shlex.quote(','.join(values))}")
    versions = run_params.get("load_versions") or {}
    if versions:
        pins = ",".join(f"{name}:{version}" for name, version in versions.items())
        parts.append(f"--load-versions={shlex.quote(pins)}")
    # Kedro passes the runner's name, or the repr of a runner instance.
    runner = re.search(r"\w*Runner", str(run_params.get("runner") or "SequentialRunner"))
    if runner and runner.group(0) != "SequentialRunner":
        parts.append(f"--runner={runner.group(0)}")
    parts.append(
        configuration_arguments(parameters, run_params.get("env"), run_params.get("runtime_params"))
    )
    return " ".join(parts)
