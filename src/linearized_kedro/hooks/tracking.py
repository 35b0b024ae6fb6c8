"""Experiment tracking in MLflow through kedro-mlflow (the optional extra ``[mlflow]``).

kedro-mlflow does what is generic: it reads ``conf/<env>/mlflow.yml`` (a SQLite store inside
the project: MLflow 3's default file store makes ``kedro run`` fail), opens one MLflow run per
``kedro run`` with Kedro's run settings as tags, and closes it (``FAILED`` on an error). Its
own hook would also log every ``params:`` input as ``str(value)``: a dataclass repr for this
project's typed parameter blocks, over MLflow's length limit for some. So ``settings.py``
disables the plugin's auto-registered hook and registers :class:`TrackingHook`, which drives
kedro-mlflow's hook for the run's life cycle and logs, instead of node inputs:

- parameters: every parameter block the pipeline reads, flattened from the typed blocks'
  ``to_dict()`` (``ntk.num_eigvecs``, ``eigen_training.train.epochs``, ``model``, ...);
- metrics: the final metrics of every results table (``experiments/results.py``), one key per
  trained model, ``<experiment>/<kind>_<task_value>/<metric>``, and the same along the task
  axis as a stepped metric ``<experiment>/<kind>/<metric>`` (step = eigen-index, NAD index or
  training-set size, so MLflow draws accuracy against it); eigenvalues as stepped metrics
  (``ntk_eigenvalues``, step j); numeric entries of the JSON reports (``ntk_report/...``);
- tags: the git commit, the ``kedro run`` command that reproduces the run (``--params``
  included), dataset and model; the MLflow run is named ``<pipelines> <dataset>/<model>``;
- artifacts: the key figures (every ``*_plot`` PNG), the JSON reports and the summary.

Tracking is on when kedro-mlflow is installed, except with ``LINEARIZED_KEDRO_TRACKING=0``
(e.g. for a test-suite, where a fresh SQLite store per project copy costs seconds per run).
Once kedro-mlflow has opened the run, a failure to log into it is a warning: tracking never
fails a run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

#: Set to 0 / false / off to run without tracking although kedro-mlflow is installed.
SWITCH = "LINEARIZED_KEDRO_TRACKING"
#: The distribution whose auto-registered hook ``settings.py`` disables.
PLUGIN = "kedro_mlflow"
_BATCH = 100  # MLflow accepts at most 100 parameters / 1000 metrics per batch


def tracking_enabled() -> bool:
    """kedro-mlflow is installed and :data:`SWITCH` does not turn tracking off."""
    if os.environ.get(SWITCH, "").strip().lower() in {"0", "false", "off", "no"}:
        return False
    return importlib.util.find_spec(PLUGIN) is not None


def tracking_hooks() -> tuple[Any, ...]:
    """``(TrackingHook(),)`` where tracking is enabled, else ``()`` (for ``settings.HOOKS``)."""
    return (TrackingHook(),) if tracking_enabled() else ()


# --- what is logged (plain data in, MLflow-ready mappings out) ------------------------------


def flat_parameters(blocks: Mapping[str, Any]) -> dict[str, str]:
    """Parameter blocks → ``{"ntk.num_eigvecs": "100", ...}`` (typed blocks via ``to_dict``)."""
    out: dict[str, str] = {}

    def visit(prefix: str, value: Any) -> None:
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping) and value:
            for key, item in value.items():
                visit(f"{prefix}.{key}", item)
        else:
            out[prefix] = str(list(value) if isinstance(value, tuple) else value)

    for name, value in blocks.items():
        visit(name, value)
    return out


def results_metrics(table: Any, metrics: Iterable[str]) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` for every final metric of a results table.

    Args:
        table: a DataFrame with the results schema (``experiment``, ``kind``, ``task_value``
            and the metric columns; ``experiments/results.py``).
        metrics: the metric columns to log.
    """
    out: list[tuple[str, float, int]] = []
    for row in table.to_dict("records"):
        step = int(row["task_value"])
        run = f"{row['kind']}_{step}"
        for metric in metrics:
            if metric in row:
                value = float(row[metric])
                out.append((f"{row['experiment']}/{run}/{metric}", value, 0))
                out.append((f"{row['experiment']}/{row['kind']}/{metric}", value, step))
        if "diverged" in row:
            out.append((f"{row['experiment']}/{run}/diverged", float(bool(row["diverged"])), 0))
    return out


def report_metrics(name: str, report: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """A JSON report's numeric top-level entries and ``timings``, as ``<name>/<key>`` metrics.

    E.g. ``ntk_report/max_residual``, ``ntk_report/timings/gram_seconds``; settings nested
    deeper (the plan, the model) are parameters, not results.
    """
    out: list[tuple[str, float, int]] = []
    entries = [(key, value) for key, value in report.items() if key != "timings"]
    entries += [(f"timings/{k}", v) for k, v in dict(report.get("timings") or {}).items()]
    for key, value in entries:
        if isinstance(value, int | float | np.number) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out.append((f"{name}/{key}", float(value), 0))
    return out


# --- the hook --------------------------------------------------------------------------------


class TrackingHook:
    """One MLflow run per ``kedro run`` (module docstring); needs kedro-mlflow."""

    def __init__(self) -> None:
        self._plugin: Any = None  # kedro-mlflow's MlflowHook
        self._client: Any = None
        self._run_id: str | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

        _make_store_folder(context)
        self._plugin = MlflowHook()
        self._plugin.after_context_created(context)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        self._plugin.before_pipeline_run(run_params, pipeline, catalog)
        active = mlflow.active_run()
        if active is None:  # tracking disabled for these pipelines in mlflow.yml
            self._run_id = None
            return
        self._run_id = active.info.run_id
        self._client = mlflow.MlflowClient()
        try:
            self._log_settings(run_params, pipeline, catalog)
        except Exception as error:  # tracking never fails a run
            logger.warning("Run settings not tracked in MLflow (%s).", error)

    def _log_settings(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Flattened parameters; command, provenance, selection as tags; the run's name."""
        from mlflow.entities import Param

        from linearized_kedro.command import pipeline_names, run_command

        # The blocks this pipeline reads, and the selection (paths depend on it) always.
        names = {n for n in pipeline.inputs() if n.startswith("params:")}
        names |= {f"params:{key}" for key in ("model", "data", "seed")}
        blocks = {
            name.removeprefix("params:"): catalog.load(name)
            for name in sorted(names)
            if catalog.exists(name)
        }
        params = flat_parameters(blocks)
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), _BATCH):
            self._client.log_batch(self._run_id, params=items[start : start + _BATCH])
        model, dataset = params.get("model"), params.get("data.dataset")
        command = run_command(run_params, {"model": model, "data": {"dataset": dataset}})
        pipelines = "+".join(pipeline_names(run_params) or ["__default__"])
        tags = {
            "mlflow.runName": f"{pipelines} {dataset}/{model}",
            "kedro_command": command,
            "model": model,
            "dataset": dataset,
            **_provenance(),
        }
        for key, value in tags.items():
            if value is not None:
                self._client.set_tag(self._run_id, key, value)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if self._run_id is None:
            return
        try:
            self._log_artifact(dataset_name, data)
        except Exception as error:  # tracking never fails a run
            logger.warning("Not tracked in MLflow: %s (%s).", dataset_name, error)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if self._plugin is not None:
            self._plugin.after_pipeline_run(run_params, pipeline, catalog)
        if self._run_id is not None:
            logger.info("Tracked in MLflow: run %s.", self._run_id)
        self._run_id = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params, pipeline, catalog) -> None:
        if self._plugin is not None:
            self._plugin.on_pipeline_error(error, run_params, pipeline, catalog)
        self._run_id = None

    def _log_artifact(self, name: str, data: Any) -> None:
        from linearized_kedro.experiments.results import METRICS

        if name.endswith("_results") and hasattr(data, "to_dict") and "kind" in data:
            self._log_metrics(results_metrics(data, METRICS))
        elif name.endswith("_eigenvalues"):
            values = np.asarray(data, np.float64).reshape(-1)
            self._log_metrics([(name, float(v), j) for j, v in enumerate(values)])
        elif name.endswith("_report") and isinstance(data, Mapping):
            if not name.startswith("data_"):  # the data set's description is not a result
                self._log_metrics(report_metrics(name, data))
            self._client.log_dict(self._run_id, dict(data), f"reports/{name}.json")
        elif name.endswith("_plot") and hasattr(data, "savefig"):
            self._client.log_figure(self._run_id, data, f"figures/{name}.png")
        elif name.startswith("summary_") and isinstance(data, str):
            suffix = "html" if name.endswith("html") else "md"
            self._client.log_text(self._run_id, data, f"reports/summary.{suffix}")

    def _log_metrics(self, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step) for key, value, step in metrics]
        for start in range(0, len(items), 10 * _BATCH):
            self._client.log_batch(self._run_id, metrics=items[start : start + 10 * _BATCH])


def _provenance() -> dict[str, str | None]:
    from linearized_kedro.datasets.metadata import git_commit, library_versions

    commit = git_commit()
    tags: dict[str, str | None] = {"git_commit": commit}
    if commit:
        tags["mlflow.source.git.commit"] = commit.removesuffix("+dirty")
    for library, version in library_versions().items():
        tags[f"version.{library}"] = version
    return tags


def _make_store_folder(context) -> None:
    """Creates the folder of a relative SQLite store (``sqlite:///data/09_tracking/...``)."""
    try:
        patterns = context.config_loader.config_patterns
        patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        uri = str(context.config_loader["mlflow"].get("server", {}).get("mlflow_tracking_uri"))
    except Exception:  # no mlflow.yml: kedro-mlflow applies its defaults
        return
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        (Path(context.project_path) / uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
