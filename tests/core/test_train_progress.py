"""Following training (core/train/progress.py): bars on a terminal, log lines elsewhere."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from linearized_kedro.core.models import build_model, init_variables
from linearized_kedro.core.train import TrainConfig, TrainingProgress, train_model, train_sweep

LOGGER = "linearized_kedro.core.train.progress"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def setup():
    module = build_model({"name": "mlp", "features": (4,)})
    variables = init_variables(module, 0, (3, 3, 1))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3, 3, 1)).astype(np.float32)
    ys = (rng.random((2, 30)) > 0.5).astype(np.float32)
    return module, variables, x[:20], ys[:, :20], x[20:], ys[:, 20:]


def _sweep(setup, progress, strategy="sequential"):
    module, variables, x, ys, xt, yts = setup
    cfg = TrainConfig(epochs=2, batch_size=8, max_lr=0.1)
    return train_sweep(
        module,
        variables,
        "network",
        x,
        ys,
        xt,
        yts,
        cfg,
        [0, 0],
        strategy=strategy,
        progress=progress,
        task_labels=["j=3", "j=10"],
    )


@pytest.mark.parametrize("strategy", ["sequential", "vmap"])
def test_not_a_terminal_gives_plain_log_lines_and_no_bars(setup, caplog, strategy):
    stream = io.StringIO()  # isatty() is False: a log file, Slurm
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        results = _sweep(setup, TrainingProgress("eigen_training", stream=stream), strategy)
    assert stream.getvalue() == ""
    records = [r for r in caplog.records if r.name == LOGGER]
    debug = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
    info = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(debug) == 4  # one per epoch and task
    assert debug[0].startswith("eigen_training j=3 network epoch 1/2: train loss ")
    assert any(m.startswith("eigen_training j=10 network epoch 2/2") for m in debug)
    assert len(info) == 2  # one per finished task, with its final accuracies
    for message, label, result in zip(info, ["j=3", "j=10"], results, strict=True):
        assert message.startswith(f"eigen_training {label} network: ")
        assert f"train acc {result.final['train_accuracy']:.4f}" in message
        assert f"test acc {result.final['test_accuracy']:.4f}" in message
        assert "after 2/2 epochs" in message
    assert all("\n" not in m for m in debug + info)  # one unwrapped line each


def test_terminal_shows_labelled_bars_with_metrics_and_an_overall_bar(setup, caplog):
    stream = Terminal()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _sweep(setup, TrainingProgress("eigen_training", stream=stream))
    text = stream.getvalue()
    assert "eigen_training j=3 network" in text and "eigen_training j=10 network" in text
    assert "loss=" in text and "test_acc=" in text
    assert "eigen_training network tasks" in text and "2/2" in text  # n of N tasks
    assert sum(r.levelno == logging.INFO for r in caplog.records if r.name == LOGGER) == 2


def test_no_progress_reports_nothing(setup, caplog, capsys):
    """Negative control for the two tests above."""
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        _sweep(setup, False)
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert capsys.readouterr().err == ""


def test_train_model_reports_one_task_and_a_divergence(setup, caplog):
    module, variables, x, ys, xt, yts = setup
    cfg = TrainConfig(epochs=3, batch_size=8, max_lr=1e30, lr_schedule="fixed")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = train_model(
            module,
            variables,
            "network",
            x,
            ys[0],
            xt,
            yts[0],
            cfg,
            0,
            progress=TrainingProgress("nad_training", stream=io.StringIO()),
            task_label="nad=4",
        )
    assert result.diverged
    (message,) = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert message.startswith("nad_training nad=4 network: ") and "DIVERGED" in message
    with pytest.raises(TypeError, match="progress"):
        train_model(module, variables, "linear", x, ys[0], xt, yts[0], cfg, 0, progress="yes")
