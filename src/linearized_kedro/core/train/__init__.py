"""One training engine for networks and their linearisations (docs/methods.md §1.5, §1.6, §4 items 8, 9, 15).

* ``config``: the ``train:`` block (``TrainConfig``), schedules and optimisers.
* ``state``: ``TrainState`` and ``train_step(state, batch) -> (state, metrics)``.
* ``epoch``: an epoch as one compiled program (scanned steps, masked last batch, test
  evaluation), for one task or several vmapped ones.
* ``sweep``: ``train_model`` (one run) and ``train_sweep`` (many tasks, grouped into
  compiled programs by a strategy).
* ``progress``: ``TrainingProgress``, bars or log lines while tasks train.
"""

from __future__ import annotations

from .config import (
    EPOCH_MODES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    make_optimizer,
    make_schedule,
    steps_per_epoch,
)
from .epoch import HISTORY_KEYS, EpochProgram, TaskData, epoch_batches, run_epoch
from .progress import TrainingProgress
from .state import (
    KINDS,
    Anchor,
    Batch,
    TrainState,
    binary_metrics,
    make_train_step,
    model_functions,
)
from .sweep import (
    EVAL_BATCH_SIZE,
    STRATEGIES,
    TrainResult,
    resolve_epoch_mode,
    resolve_strategy,
    train_model,
    train_sweep,
)

__all__ = [
    "EPOCH_MODES",
    "EVAL_BATCH_SIZE",
    "HISTORY_KEYS",
    "KINDS",
    "OPTIMIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "Anchor",
    "Batch",
    "EpochProgram",
    "TaskData",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingProgress",
    "binary_metrics",
    "epoch_batches",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "model_functions",
    "resolve_epoch_mode",
    "resolve_strategy",
    "run_epoch",
    "steps_per_epoch",
    "train_model",
    "train_sweep",
]
