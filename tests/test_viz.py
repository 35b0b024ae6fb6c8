"""Kedro-Viz shows the run the user made: on the built files, by rerunning, and in a browser.

One project copy runs the README's command ``kedro run --pipelines ntk_spectrum --params
model=lenet,data.dataset=digits`` together with a one-task ``eigen_training`` (a results
table), tiny ``conf/test`` sizes, then:

- the README's viewing command ``kedro view --params model=lenet,data.dataset=digits``
  (``linearized_kedro.cli``) serves that run: its eigenvalue preview in the browser, and every
  run command completed with the run's ``--params``/``--env``; the command shown for
  ``compute_spectrum``, run as is, reproduces the eigenvalues, and without its ``--params``
  it would run on CIFAR-10 (negative control);
- ``kedro viz build --include-previews`` (which takes no ``--params``) honours the
  configuration-level choice ``LINEARIZED_KEDRO_MODEL``/``_DATASET`` (read by
  ``conf/base/globals.yml``): previews of that run, no "could not be previewed" warning for an
  artifact that exists; without them it shows CIFAR-10's (empty) paths instead;
- in headless Chromium (Debian's ``chromium``, driven by Playwright) that static site, served
  locally, renders the graph, every registered pipeline is selectable and shows its layers,
  and the previews of the spectrum (array, Plotly figure, PNG) and of the results table
  appear; the same check reports a copy of the site with a pipeline, the layers and the
  previews removed (negative control).

Browser checks skip only where Chromium or Playwright is missing (``.ci/run`` installs both).
Budget: about 2 minutes on 2 idle CPU cores (one pipeline run, three site builds, one rerun).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, copy_project, kedro_env, run_kedro

from linearized_kedro.pipeline_registry import all_pipelines

pytestmark = pytest.mark.slow

SELECTION = "model=lenet,data.dataset=digits"
ENV = "test"
RUN_ARGUMENTS = f"--params {SELECTION} --env {ENV}"
# The configuration-level choice of the run (conf/base/globals.yml reads these variables).
CHOSEN = {"LINEARIZED_KEDRO_MODEL": "lenet", "LINEARIZED_KEDRO_DATASET": "digits", "KEDRO_ENV": ENV}
SPECTRUM = "data/05_model_input/digits/lenet/ntk_eigenvalues.npy"
RESULTS = "data/07_model_output/digits/lenet/eigen_training_results.csv"
# Layers of the catalog (conf/base/catalog.yml), all used by __default__.
LAYERS = {"raw", "primary", "model_input", "models", "model_output", "reporting"}
CHROMIUM = Path("/usr/bin/chromium")
# Chromium on a machine without network: no background connections (they fail by the dozen).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def kedro(project: Path, *args: str, check: bool = True, env: dict[str, str] | None = None):
    if env is None:
        return run_kedro(project, *args, check=check, timeout=300)
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        env={**kedro_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed:\n{proc.stderr[-6000:]}")
    return proc


def versions(path: Path) -> list[Path]:
    """Saved versions of a versioned artifact, oldest first."""
    return sorted(p / path.name for p in path.iterdir() if (p / path.name).exists())


def data_node(site: Path, name: str) -> dict:
    """The node response of dataset ``name`` (found through the pipeline graph)."""
    graph = json.loads((site / "api" / "main").read_text())
    node_id = next(n["id"] for n in graph["nodes"] if n["name"] == name)
    return json.loads((site / "api" / "nodes" / node_id).read_text())


def task_node(site: Path, name: str) -> dict:
    graph = json.loads((site / "api" / "main").read_text())
    node_id = next(
        n["id"] for n in graph["nodes"] if n["type"] == "task" and n["name"].endswith(name)
    )
    return json.loads((site / "api" / "nodes" / node_id).read_text())


def build(project: Path, *args: str, env: dict[str, str] | None = None, name: str) -> Path:
    """Runs a Kedro-Viz build command; keeps ``build/`` as ``<project>/../<name>`` + its log."""
    proc = kedro(project, *args, env=env)
    site = project.parent / name
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(project / "build", site)
    (site / "build.log").write_text(proc.stdout + proc.stderr)
    return site


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("viz") / "project")
    pipelines = "ntk_spectrum,eigen_training"
    params = f"{SELECTION},label_idx=1"
    kedro(project, "run", "--env", ENV, "--pipelines", pipelines, "--params", params)
    return project


def _free_port() -> int:
    """A free localhost port below 49152 (Kedro-Viz refuses the ephemeral range)."""
    for port in random.Random(os.getpid()).sample(range(20_000, 49_000), 200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free localhost port between 20000 and 49000")


@dataclass(frozen=True)
class Served:
    url: str
    site: Path  # a copy of the files it serves, with the command's log


@pytest.fixture(scope="module")
def view(project) -> Iterator[Served]:
    """The README's ``kedro view --params model=lenet,data.dataset=digits`` (and ``--env``).

    Module-scoped and first: later Kedro-Viz builds rewrite the project's ``build/``.
    """
    port = _free_port()
    log_path = project.parent / "view.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kedro", "view", "--params", SELECTION, "--env", ENV]
        + ["--no-browser", "--port", str(port)],
        cwd=project,
        env=kedro_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Kedro-Viz serves from a child process: stop the group
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, log_path.read_text()[-4000:]
        site = project.parent / "view"
        shutil.copytree(project / "build", site)
        shutil.copy2(log_path, site / "build.log")
        yield Served(f"http://127.0.0.1:{port}/", site)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def viz_build(project, view) -> Path:
    """``kedro viz build --include-previews`` with the run chosen by environment variables."""
    return build(project, "viz", "build", "--include-previews", env=CHOSEN, name="viz")


def test_readme_documents_the_tested_commands():
    readme = (PROJECT_ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block == [
        f"pip install -e . && kedro run --pipelines ntk_spectrum --params {SELECTION}",
        'pip install -e ".[dev]" && pytest -q',
    ]
    assert f"kedro view --params {SELECTION}" in readme
    assert "LINEARIZED_KEDRO_MODEL=lenet LINEARIZED_KEDRO_DATASET=digits" in readme


# --- the built files -------------------------------------------------------------------------


def test_view_writes_reproducing_run_commands(project, view):
    eigenvalues = np.load(versions(project / SPECTRUM)[-1])
    preview = json.loads(data_node(view.site, "ntk_eigenvalues")["preview"])
    np.testing.assert_array_equal(preview["head"], eigenvalues[:10])
    commands = [
        response["run_command"]
        for response in map(json.loads, map(Path.read_text, (view.site / "api/nodes").iterdir()))
        if response.get("run_command")
    ]
    assert len(commands) > 40, len(commands)
    assert all(c.endswith(f" {RUN_ARGUMENTS}") for c in commands), commands[:3]
    # Artifacts never produced for digits/lenet are listed once, not warned about one by one.
    log = (view.site / "build.log").read_text()
    assert "could not be previewed" not in log
    assert "No saved version yet for digits/lenet" in log and "cifar2_results" in log

    command = task_node(view.site, "compute_spectrum")["run_command"]
    assert command == f"kedro run --to-nodes='ntk_spectrum.compute_spectrum' {RUN_ARGUMENTS}"
    before = versions(project / SPECTRUM)
    kedro(project, *shlex.split(command)[1:])
    after = versions(project / SPECTRUM)
    assert len(after) == len(before) + 1
    np.testing.assert_allclose(np.load(after[-1]), np.load(before[-1]), rtol=1e-10)
    # Negative control: Kedro-Viz's own command (no --params) targets CIFAR-10, not this run
    # (downloads refused here, so it fails fast naming the missing data set).
    bare = shlex.split(command.replace(f"--params {SELECTION}", "--params data.download=never"))
    proc = kedro(project, *bare[1:], check=False)
    assert proc.returncode != 0 and "cifar10" in (proc.stdout + proc.stderr).lower()
    assert versions(project / SPECTRUM) == after


def test_documented_command_serves_the_run(project, view, browser):
    """The README's ``kedro view --params model=lenet,data.dataset=digits``, in a browser."""
    expected = expected_site(
        project,
        f"kedro run --to-nodes='ntk_spectrum.compute_spectrum' {RUN_ARGUMENTS}",
        every_pipeline=False,
    )
    assert inspect_site(browser, view.url, expected) == []


def test_viz_build_honours_the_chosen_run(project, viz_build):
    eigenvalues = np.load(versions(project / SPECTRUM)[-1])
    node = data_node(viz_build, "ntk_eigenvalues")
    assert node["filepath"].endswith("digits/lenet/ntk_eigenvalues.npy"), node["filepath"]
    preview = json.loads(node["preview"])
    np.testing.assert_array_equal(preview["head"], eigenvalues[:10])
    table = data_node(viz_build, "eigen_training_results")["preview"]
    assert "test_accuracy" in table["columns"] and len(table["data"]) == 2  # network, linear
    assert data_node(viz_build, "ntk_spectrum_figure")["preview"]["data"]  # Plotly traces
    assert data_node(viz_build, "ntk_spectrum_plot")["preview"].startswith("iVBOR")  # PNG
    log = (viz_build / "build.log").read_text()
    produced = {"ntk_eigenvalues", "ntk_report", "eigen_training_results", "ntk_spectrum_plot"}
    warned = {line.split("'")[1] for line in log.splitlines() if "could not be previewed" in line}
    assert not warned & produced, warned & produced
    # Negative control: without the variables the same build shows CIFAR-10 (the project's
    # default), where nothing was run: no preview, a warning per artifact.
    other = build(project, "viz", "build", "--include-previews", env={"KEDRO_ENV": ENV}, name="x")
    node = data_node(other, "ntk_eigenvalues")
    assert "cifar10/lenet" in node["filepath"] and node.get("preview") is None
    assert "'ntk_eigenvalues' could not be previewed" in (other / "build.log").read_text()


# --- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(
            "Chromium is not installed (/usr/bin/chromium): `apt-get install chromium` "
            "(.ci/run does it when it runs as root with apt)."
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[dev]'."
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def served(site: Path) -> Iterator[str]:
    """A static web server on a free localhost port for ``site``; yields its URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no request log in the test output
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Expected:
    """What the site of the test run must show."""

    pipelines: frozenset[str]
    eigenvalue: str  # λ0 as the JSON preview prints it
    run_command: str  # shown for the compute_spectrum node
    every_pipeline: bool = True


def _menu(page, open_: bool) -> None:
    """Opens or closes the pipeline menu (its label toggles it)."""
    if bool(page.locator(".pipeline-list .dropdown--open").count()) != open_:
        page.locator(".pipeline-list .dropdown__label").click()
    if open_:  # the options render after the click: read them only once they are there
        try:
            page.locator(".pipeline-list .menu-option").first.wait_for(timeout=10_000)
        except Exception:  # the caller polls again (the click may have been lost)
            pass


def _listed_pipelines(page, wanted: set[str], timeout: float = 30.0) -> set[str]:
    """The pipelines the open menu lists, polled until ``wanted`` shows or ``timeout`` passes.

    The menu's options render a moment after the click (longer on a loaded machine), so a
    single read can see none; a menu that did not open is opened again.
    """
    deadline = time.monotonic() + timeout
    listed: set[str] = set()
    while True:
        _menu(page, True)
        listed = set(page.locator(".pipeline-list .menu-option").all_inner_texts())
        if wanted <= listed or time.monotonic() > deadline:
            return listed
        page.wait_for_timeout(250)


def _select(page, pipeline: str) -> None:
    _menu(page, True)
    page.locator(f'.pipeline-list .menu-option__content[title="{pipeline}"]').click()
    page.wait_for_function(
        "name => document.querySelector('.pipeline-list .dropdown__label').innerText === name",
        arg=pipeline,
        timeout=10_000,
    )
    page.wait_for_selector(".pipeline-node", timeout=10_000)


def _open(page, name: str, css: str):
    """Clicks node ``name``; returns the details panel if ``css`` shows in it, else None.

    Waits for the node's metadata (its file path or run command, fetched on click), then
    briefly for ``css``, which Kedro-Viz renders from the same response.
    """
    node = page.locator(f'.pipeline-node[data-node-fullname="{name}"]')
    if node.count() == 0:
        return None
    node.first.click()
    panel = page.locator(".pipeline-metadata")
    try:
        panel.locator(".pipeline-metadata__title", has_text=name).wait_for(timeout=10_000)
        loaded = '[data-label="File Path:"], .command-value'
        panel.locator(loaded).first.wait_for(timeout=10_000)
        panel.locator(css).first.wait_for(timeout=2_000)
    except Exception:
        return None
    return panel


def inspect_site(browser, url: str, expected: Expected) -> list[str]:
    """Drives Kedro-Viz at ``url``; returns what is missing (an empty list: all shown)."""
    page = browser.new_page(viewport={"width": 1920, "height": 1200})
    # The first visit's guided tour covers the graph.
    page.add_init_script(
        "window.localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}))"
    )
    problems: list[str] = []
    try:
        page.goto(url)
        try:
            page.wait_for_selector(".pipeline-node", timeout=60_000)
        except Exception:
            return ["the graph did not render"]
        shown = set(page.locator(".pipeline-layer-name").all_inner_texts())
        if not LAYERS <= shown:
            problems.append(f"layers not shown in __default__: {sorted(LAYERS - shown)}")
        listed = _listed_pipelines(page, expected.pipelines)
        if os.environ.get("VIZ_SCREENSHOT"):  # debugging aid: what the browser showed
            page.screenshot(path=os.environ["VIZ_SCREENSHOT"])
        _menu(page, False)
        if not expected.pipelines <= listed:
            problems.append(f"pipelines not selectable: {sorted(expected.pipelines - listed)}")
        for pipeline in sorted(expected.pipelines & listed) if expected.every_pipeline else ():
            _select(page, pipeline)
            if not page.locator(".pipeline-layer-name").count():
                problems.append(f"no layers shown in {pipeline}")

        _select(page, "ntk_spectrum")
        page.locator('.pipeline-node--modularPipeline[data-node-fullname="ntk_spectrum"]').click()
        panel = _open(page, "ntk_eigenvalues", ".pipeline-metadata__preview-json")
        if panel is None or expected.eigenvalue not in panel.inner_text():
            problems.append("no preview of the eigenvalues")
        if _open(page, "ntk_spectrum_figure", ".js-plotly-plot") is None:
            problems.append("no preview of the Plotly spectrum")
        panel = _open(page, "ntk_spectrum_plot", "img.pipeline-metadata__plot-image")
        if panel is None or not panel.locator("img").first.get_attribute("src", timeout=1_000):
            problems.append("no preview of the spectrum PNG")
        panel = _open(page, "compute_spectrum", ".command-value")
        command = panel.locator(".command-value").first.inner_text() if panel else None
        if command != expected.run_command:
            problems.append(f"run command shown: {command!r}")

        _select(page, "eigen_training")
        page.locator('.pipeline-node--modularPipeline[data-node-fullname="eigen_training"]').click()
        panel = _open(page, "eigen_training_results", ".preview-table")
        if panel is None or "test_accuracy" not in panel.inner_text():
            problems.append("no preview of the results table")
    finally:
        page.close()
    return problems


def expected_site(project: Path, run_command: str, every_pipeline: bool = True) -> Expected:
    eigenvalues = np.load(versions(project / SPECTRUM)[-1])
    assert len(pd.read_csv(versions(project / RESULTS)[-1])) == 2
    return Expected(
        pipelines=frozenset({*all_pipelines(), "__default__"}),
        eigenvalue=repr(float(eigenvalues[0])),
        run_command=run_command,
        every_pipeline=every_pipeline,
    )


def test_browser_shows_every_pipeline_its_layers_and_the_run(project, viz_build, browser):
    # Kedro-Viz's bare command: right in a shell with the same variables set.
    expected = expected_site(project, "kedro run --to-nodes='ntk_spectrum.compute_spectrum'")
    with served(viz_build) as url:
        assert inspect_site(browser, url, expected) == []


def test_browser_check_fails_without_a_pipeline_layers_or_previews(
    project, viz_build, browser, tmp_path
):
    """Negative control of the check above: the same site with parts removed."""
    site = tmp_path / "broken"
    shutil.copytree(viz_build, site)
    main = json.loads((site / "api/main").read_text())
    main["pipelines"] = [p for p in main["pipelines"] if p["id"] != "nads"]
    for path in [site / "api/main", *(site / "api/pipelines").iterdir()]:
        graph = main if path.name == "main" else json.loads(path.read_text())
        graph["layers"] = []
        for node in graph["nodes"]:
            node["layer"] = None
        path.write_text(json.dumps(graph))
    for path in (site / "api/nodes").iterdir():
        response = json.loads(path.read_text())
        if isinstance(response, dict) and "preview" in response:
            response["preview"] = None
            path.write_text(json.dumps(response))
    expected = expected_site(
        project, "kedro run --to-nodes='ntk_spectrum.compute_spectrum'", every_pipeline=False
    )
    with served(site) as url:
        problems = inspect_site(browser, url, expected)
    assert any("not selectable: ['nads']" in p for p in problems), problems
    assert any("layers not shown" in p for p in problems), problems
    for kind in ("eigenvalues", "Plotly spectrum", "spectrum PNG", "results table"):
        assert f"no preview of the {kind}" in problems, problems
