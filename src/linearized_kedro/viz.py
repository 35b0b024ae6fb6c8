"""Kedro-Viz for the run you made: its previews, and run commands that reproduce it.

Which run Kedro-Viz shows is a matter of configuration: every artifact path is
``data/<layer>/<dataset>/<model>/...`` (``conf/base/catalog.yml``), with the dataset and model
taken from ``--params`` or, without them, from ``globals.yml`` (``defaults.model``,
``defaults.dataset``, which the environment variables ``LINEARIZED_KEDRO_MODEL`` /
``LINEARIZED_KEDRO_DATASET`` replace). Two gaps of Kedro-Viz 12.5 are closed here:

- ``kedro viz build`` takes neither ``--params`` nor ``--env``;
- the "run command" shown for a node is ``kedro run --to-nodes='<node>'`` (for a dataset
  ``kedro run --to-outputs=<dataset>``) without the configuration the graph was loaded with,
  so copying it after ``kedro viz run --params data.dataset=digits`` reruns on CIFAR-10.
  Kedro-Viz has no setting for it (an upstream change to append the parameters was proposed
  and never merged), and a project cannot replace its commands (``kedro viz`` is a global
  plugin command, which a project's ``cli.py`` does not override). So the API files it
  writes are completed after the fact: every run command gets ``--params
  model=<model>,data.dataset=<dataset>[,<other --params>]`` and the ``--env`` of the view,
  the values resolved from the configuration, so the command is right on any checkout and in
  any shell.

``kedro view`` (``linearized_kedro.cli``) writes such a site to ``build/`` and serves it with
Kedro-Viz. Kedro-Viz's own ``kedro viz run --params ...`` and (with the environment
variables) ``kedro viz build`` show the same previews; their bare run commands reproduce
the run only in a shell with the same variables.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from linearized_kedro.command import configuration_arguments, flatten

logger = logging.getLogger(__name__)

#: The command Kedro-Viz writes for a node, up to where the configuration goes.
_RUN_COMMAND = re.compile(r"^kedro run --to-(?:nodes|outputs)=\S+")
#: Where Kedro-Viz's local deployer (``kedro viz build``) writes, from the current directory.
SITE = Path("build")


def resolved_parameters(
    project_path: Path, env: str | None, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The parameters a ``kedro run --env <env> --params <params>`` would see (no hooks run)."""
    from kedro.framework.project import settings

    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(Path(project_path) / settings.CONF_SOURCE),
        env=env,
        runtime_params=dict(params or {}),
        **settings.CONFIG_LOADER_ARGS,
    )
    return dict(loader["parameters"])


def complete_run_commands(api_dir: Path, arguments: str) -> int:
    """Appends ``arguments`` to every run command of a Kedro-Viz API folder, in place.

    Idempotent: a command completed before is completed again from Kedro-Viz's part only.

    Args:
        api_dir: the ``api`` folder Kedro-Viz wrote (``build/api``); node files in ``nodes/``.
        arguments: from :func:`linearized_kedro.command.configuration_arguments`.

    Returns:
        The number of run commands written.
    """
    count = 0
    for path in sorted((Path(api_dir) / "nodes").iterdir()):
        response = json.loads(path.read_text(encoding="utf-8"))
        command = response.get("run_command") if isinstance(response, dict) else None
        match = _RUN_COMMAND.match(command or "")
        if not match:
            continue
        response["run_command"] = f"{match.group(0)} {arguments}"
        path.write_text(json.dumps(response), encoding="utf-8")
        count += 1
    return count


class _NotProducedYet(logging.Filter):
    """Collects Kedro-Viz's "could not be previewed ... VersionNotFoundError" warnings.

    They name artifacts that were never saved for this dataset and model (an experiment not
    run yet), one long warning each; they are reported once, as a list. Any other preview
    failure stays a warning.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if "could not be previewed" in str(record.msg) and "VersionNotFoundError" in args:
            self.names.append(str(args[0]))
            return False
        return True


@contextmanager
def _summarised_missing_artifacts(selection: str) -> Iterator[None]:
    preview_logger = logging.getLogger("kedro_viz.models.flowchart.node_metadata")
    collector = _NotProducedYet()
    preview_logger.addFilter(collector)
    try:
        yield
    finally:
        preview_logger.removeFilter(collector)
    if collector.names:
        logger.info(
            "No saved version yet for %s (not run, no preview): %s.",
            selection,
            ", ".join(sorted(set(collector.names))),
        )


def build_site(
    project_path: Path,
    *,
    env: str | None = None,
    params: Mapping[str, Any] | None = None,
    include_previews: bool = True,
    include_hooks: bool = False,
    pipeline: str | None = None,
) -> Path:
    """Writes Kedro-Viz's static site of one configuration to ``build/``, as ``kedro viz build``.

    The project is loaded as ``kedro run --env <env> --params <params>`` would load it, and
    every run command of the site is completed with that configuration.

    Args:
        project_path: the Kedro project; the site goes to ``build/`` of the current directory
            (Kedro-Viz's fixed place), which the CLI runs in.
        env: Kedro environment, as ``kedro run --env``.
        params: runtime parameters, as ``kedro run --params`` (nested mapping).
        include_previews: embed dataset previews (Kedro-Viz's ``--include-previews``).
        include_hooks: run the project's hooks while loading (Kedro-Viz's option).
        pipeline: only this registered pipeline (``None``: all of them).

    Returns:
        The site folder (``build``).
    """
    from kedro.framework.project import PACKAGE_NAME
    from kedro_viz.integrations.deployment.local_deployer import LocalDeployer
    from kedro_viz.server import load_and_populate_data

    parameters = resolved_parameters(project_path, env, params)
    arguments = configuration_arguments(parameters, env, params)
    selection = f"{flatten(parameters).get('data.dataset')}/{parameters.get('model')}"
    with _summarised_missing_artifacts(selection):
        load_and_populate_data(
            Path(project_path),
            env=env,
            include_hooks=include_hooks,
            package_name=PACKAGE_NAME,
            pipeline_name=pipeline,
            extra_params=dict(params or {}),
        )
        deployer = LocalDeployer()
        deployer.deploy(include_previews)
    site = SITE
    count = complete_run_commands(site / "api", arguments)
    logger.info(
        "Kedro-Viz site of %s in %s/: %d run commands end with `%s`.",
        selection,
        site,
        count,
        arguments,
    )
    return site
