"""Following training as it runs: bars on a terminal, plain log lines elsewhere.

``train_model`` and ``train_sweep`` accept ``progress=TrainingProgress("eigen_training")``
(or ``progress=True`` for an unnamed one) and tell it about every task they train, one
epoch at a time (the engine already reads the metrics once per epoch; nothing is added to
the compiled programs).

On a terminal (``stream.isatty()``) a sweep shows an overall n-of-N bar and, for each task
(or vmapped group of tasks), a bar over epochs labelled with the experiment, the task and
the kind (``eigen_training j=10 network``) that shows the loss and accuracies so far.
Elsewhere (a log file, Slurm) there are no bars: one DEBUG line per epoch and task. Both
ways, one INFO line per finished task gives its final train and test accuracy.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class TrainingProgress:
    """Reports the tasks of one experiment as they train.

    Args:
        experiment: the name that starts every label (e.g. ``"eigen_training"``).
        stream: where bars go (default ``sys.stderr``).
        bars: draw bars; default: only when ``stream`` is a terminal.
        log: the logger of the per-epoch (DEBUG) and per-task (INFO) lines.
    """

    def __init__(
        self,
        experiment: str = "train",
        *,
        stream: TextIO | None = None,
        bars: bool | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.experiment = experiment
        self.stream = sys.stderr if stream is None else stream
        self.bars = _isatty(self.stream) if bars is None else bool(bars)
        self.log = logger if log is None else log
        self._overall: Any = None
        self._group: Any = None
        self._labels: list[str] = []
        self._epochs = 0
        self._started = 0.0

    def label(self, task: str, kind: str) -> str:
        """``"<experiment> <task> <kind>"``, e.g. ``"eigen_training j=10 network"``."""
        return f"{self.experiment} {task} {kind}"

    # Called by the engine ----------------------------------------------------------------

    def start_sweep(self, kind: str, num_tasks: int) -> None:
        """Before the first task of a sweep of ``num_tasks`` tasks."""
        if self.bars and num_tasks > 1:
            self._overall = tqdm(
                total=num_tasks,
                desc=f"{self.experiment} {kind} tasks",
                unit="task",
                file=self.stream,
                dynamic_ncols=True,
            )

    def start_group(self, kind: str, tasks: Sequence[str], epochs: int) -> None:
        """Before a group of tasks trained together (one task unless vmapped)."""
        self._labels = [self.label(task, kind) for task in tasks]
        self._epochs = int(epochs)
        self._started = time.perf_counter()
        if self.bars:
            if len(tasks) == 1:
                desc = self._labels[0]
            else:
                desc = f"{self.experiment} {tasks[0]}..{tasks[-1]} {kind} ({len(tasks)} tasks)"
            self._group = tqdm(
                total=self._epochs,
                desc=desc,
                unit="epoch",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )

    def end_epoch(self, epoch: int, metrics: Mapping[str, np.ndarray], alive: np.ndarray) -> None:
        """After epoch ``epoch`` (0-based); ``metrics`` and ``alive`` hold one entry per task."""
        if self._group is not None:
            self._group.update(1)
            live = np.asarray(alive, bool)
            if live.any():
                # Refreshed every epoch (an epoch is seconds to minutes; one redraw each).
                self._group.set_postfix(
                    loss=f"{np.mean(metrics['train_loss'][live]):.4f}",
                    acc=f"{np.mean(metrics['train_accuracy'][live]):.3f}",
                    test_acc=f"{np.mean(metrics['test_accuracy'][live]):.3f}",
                )
        if self.log.isEnabledFor(logging.DEBUG):
            for label, live, values in zip(
                self._labels, alive, _per_task(metrics, len(self._labels)), strict=True
            ):
                if live:
                    self.log.debug(
                        "%s epoch %d/%d: train loss %.4f acc %.4f, test loss %.4f acc %.4f",
                        label,
                        epoch + 1,
                        self._epochs,
                        values["train_loss"],
                        values["train_accuracy"],
                        values["test_loss"],
                        values["test_accuracy"],
                    )

    def end_group(self, finals: Sequence[Mapping[str, float]], diverged: Sequence[bool]) -> None:
        """After a group: one INFO line per task with its final metrics."""
        if self._group is not None:
            self._group.close()
            self._group = None
        seconds = time.perf_counter() - self._started
        together = f", trained with {len(self._labels) - 1} others" if len(self._labels) > 1 else ""
        for label, final, failed in zip(self._labels, finals, diverged, strict=True):
            self.log.info(
                "%s: train acc %.4f, test acc %.4f (loss %.4f / %.4f) after %d/%d epochs%s "
                "in %.1f s%s",
                label,
                final["train_accuracy"],
                final["test_accuracy"],
                final["train_loss"],
                final["test_loss"],
                int(final["epochs_completed"]),
                self._epochs,
                ", DIVERGED" if failed else "",
                seconds,
                together,
            )
            if self._overall is not None:
                self._overall.update(1)

    def end_sweep(self) -> None:
        """After the last task of a sweep."""
        if self._overall is not None:
            self._overall.close()
            self._overall = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _per_task(metrics: Mapping[str, np.ndarray], n: int) -> list[dict[str, float]]:
    return [{k: float(np.reshape(v, (n,))[t]) for k, v in metrics.items()} for t in range(n)]


def as_reporter(progress: bool | TrainingProgress | None) -> TrainingProgress | None:
    """The reporter for a ``progress=`` argument: ``True`` is an unnamed one, falsy none."""
    if isinstance(progress, TrainingProgress):
        return progress
    if progress is None or progress is False:
        return None
    if progress is True:
        return TrainingProgress()
    raise TypeError(f"progress must be a bool or a TrainingProgress; got {progress!r}.")
