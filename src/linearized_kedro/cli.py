"""Project commands added to the ``kedro`` CLI: ``kedro gc``, ``kedro verify``, ``kedro runs``,
``kedro view``.

Kedro merges the ``cli`` group of ``<package>.cli`` into its command line; ``run``
is Kedro's own, re-exported because Kedro looks the project's ``run`` up here too
(``linearized-kedro`` / ``python -m linearized_kedro``).

``kedro view``: Kedro-Viz on the run you made. It writes Kedro-Viz's static site for the
configuration given by ``--params``/``--env`` to ``build/`` (dataset previews included, every
run command completed with that configuration: ``linearized_kedro.viz``) and serves it with
Kedro-Viz (``kedro viz run --load-file build``). Kedro-Viz's own commands cannot be extended
from a project (``kedro viz`` is a global plugin command, which project commands do not
override), and ``kedro viz build`` takes no ``--params``.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click
from kedro.framework.cli.project import PARAMS_ARG_HELP, run
from kedro.framework.cli.utils import _split_params

from linearized_kedro.datasets import retention
from linearized_kedro.datasets import runs as registry


@click.group(name="linearized_kedro")
def cli() -> None:
    """Storage commands of the linearized-kedro project."""


cli.add_command(run)

_DATA = click.option(
    "--data",
    "data_root",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Data folder of the project.",
)


def _duration_option(flag: str, default: float, help: str):
    """A non-negative duration (hours, days) with a shown default."""
    return click.option(
        flag, default=default, show_default=True, type=click.FloatRange(min=0), help=help
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


@cli.command()
@_DATA
@click.option(
    "--keep-last",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Complete versions kept per artifact (the latest complete one is always kept).",
)
@click.option(
    "--keep",
    multiple=True,
    metavar="VERSION",
    help="Run (version) never to remove, as VERSION or DATASET:VERSION; repeatable. "
    "Versions listed in <data>/.pins are kept too.",
)
@_duration_option(
    "--grace-hours", 24.0, "Incomplete versions and temporary files younger than this are kept."
)
@_duration_option(
    "--tile-age-days", 7.0, "Gram tiles no live run holds are removed once untouched this long."
)
@click.option("--apply", is_flag=True, help="Remove; without it, only list what would go.")
def gc(data_root, keep_last, keep, grace_hours, tile_age_days, apply):
    """Removes old versions beyond a retention rule, incomplete versions and orphaned tiles.

    Never removes the latest complete version of an artifact, a pinned run, a run
    that is still running, or any run a kept version was computed from.
    """
    if not data_root.is_dir():
        raise click.UsageError(
            f"No data folder {data_root}; run from the project root or pass --data."
        )
    removals = retention.plan_gc(
        data_root,
        keep_last=keep_last,
        keep=[k.rsplit(":", 1)[-1] for k in keep],
        grace_s=grace_hours * 3600,
        tile_age_s=tile_age_days * 86400,
    )
    for item in removals:
        click.echo(
            f"{'remove' if apply else 'would remove'} {item.path} ({_mib(item.size)}): {item.reason}"
        )
    total = sum(item.size for item in removals)
    if apply:
        freed = retention.apply_gc(removals)
        click.echo(f"Removed {len(removals)} item(s), {_mib(freed)}.")
    else:
        click.echo(f"{len(removals)} item(s), {_mib(total)}; rerun with --apply to remove them.")


@cli.command()
@_DATA
def verify(data_root):
    """Checks every stored artifact version against the SHA-256 in its sidecar."""
    checked, findings = retention.verify_all(data_root)
    for finding in findings:
        click.echo(f"CORRUPTED {finding.path}: {finding.problem}", err=True)
    click.echo(f"Checked {checked} file(s): {len(findings)} problem(s).")
    if findings:
        click.echo(
            "Delete the version folder of each corrupted file and rerun the pipeline that "
            "produces it (or pin another version with --load-versions).",
            err=True,
        )
        sys.exit(1)


@cli.command()
@_DATA
@click.option("--last", default=20, show_default=True, type=click.IntRange(min=1))
def runs(data_root, last):
    """Lists recent runs: id, status, pipelines and what each committed."""
    for record in registry.list_runs(data_root / registry.RUNS_DIR.name)[:last]:
        started = record.get("started")
        when = _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds") if started else "?"
        committed = sorted(
            p.stem
            for p in (data_root / registry.RUNS_DIR.name / record["run_id"] / "commits").glob(
                "*.json"
            )
        )
        click.echo(
            f"{record['run_id']}  {record['status']:<8}  started {when}  pipelines "
            f"{','.join(record.get('pipeline_names') or ['__default__'])}  committed "
            f"{','.join(committed) or '-'}"
        )


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
