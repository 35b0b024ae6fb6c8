"""Project commands (Kedro adds the ``cli`` group of a project's ``cli.py`` to ``kedro``).

``kedro view``: Kedro-Viz on the run you made. It writes Kedro-Viz's static site for the
configuration given by ``--params``/``--env`` to ``build/`` (dataset previews included, every
run command completed with that configuration: ``linearized_kedro.viz``) and serves it with
Kedro-Viz (``kedro viz run --load-file build``). Kedro-Viz's own commands cannot be extended
from a project (``kedro viz`` is a global plugin command, which project commands do not
override), and ``kedro viz build`` takes no ``--params``. Imports are deferred: every
``kedro`` command loads this module.
"""

from __future__ import annotations

import click
from kedro.framework.cli.project import PARAMS_ARG_HELP
from kedro.framework.cli.utils import _split_params


@click.group(name="linearized-kedro")
def cli() -> None:
    """Project commands."""


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--params",
    type=click.UNPROCESSED,
    default="",
    callback=_split_params,
    help=PARAMS_ARG_HELP + " E.g. --params model=lenet,data.dataset=digits.",
)
@click.option(
    "--env",
    "-e",
    type=str,
    default=None,
    envvar="KEDRO_ENV",
    help="Kedro configuration environment, as in `kedro run` (default: local).",
)
@click.option("--pipeline", "-p", default=None, help="Only this registered pipeline.")
@click.option(
    "--serve/--no-serve",
    default=True,
    help="Serve the site with Kedro-Viz (default), or only write build/.",
)
@click.option("--host", default="127.0.0.1", help="Host Kedro-Viz listens on.")
@click.option("--port", default=4141, type=int, help="Port Kedro-Viz listens on.")
@click.option("--browser/--no-browser", default=True, help="Open a browser (localhost only).")
@click.option("--include-hooks", is_flag=True, help="Run the project's hooks while loading.")
@click.pass_context
def view(
    ctx: click.Context,
    params: dict,
    env: str | None,
    pipeline: str | None,
    serve: bool,
    host: str,
    port: int,
    browser: bool,
    include_hooks: bool,
) -> None:
    """Kedro-Viz on one run: previews and reproducing run commands (site in build/)."""
    from pathlib import Path

    from linearized_kedro.viz import build_site

    site = build_site(
        Path.cwd(), env=env, params=params, pipeline=pipeline, include_hooks=include_hooks
    )
    if not serve:
        click.secho(f"Kedro-Viz site written to {site}/ (serve it with any web server).")
        return
    from kedro_viz.launchers.cli.run import run as kedro_viz_run

    ctx.invoke(kedro_viz_run, load_file=str(site), host=host, port=port, browser=browser)
