"""One epoch as one compiled program, for one task or several vmapped tasks (docs/methods.md §1.6).

An epoch draws its batch order with ``fold_in(key, epoch)``, runs ``ceil(N / batch_size)``
:func:`state.make_train_step` steps, then evaluates every test sample and the distance
from θ0. Semantics (deliberate differences from the original, docs/methods.md §4 items 8, 9, 15):

* The last partial batch is **masked, not dropped**: positions past the end of the
  permutation wrap around it (so BatchNorm in training mode sees real samples) with loss
  weight 0; every sample counts exactly once per epoch and a step's loss is the mean over
  its valid samples. The schedules' horizon is ``T = epochs * ceil(N / batch_size)``.
* Train metrics average every sample of the epoch (each evaluated with the parameters of
  the step that used it), not the last batch; test metrics cover every test sample.
* ‖θ − θ0‖, ‖θ − θ0‖ / ‖θ0‖ and the squared distance are recorded under explicit names.
* A task whose epoch ends non-finite keeps the state it started the epoch with and is no
  longer *alive*: later epochs leave it unchanged (it matters when tasks are vmapped).

``EpochProgram.epoch_mode`` picks how the steps run, with the same numbers either way:
``"scan"`` (one ``lax.scan``, the whole epoch one program) or ``"loop"`` (a Python loop
over one compiled step per batch whose buffers are donated; the batch is gathered on the
device, so there is no host round trip per step either).

Vmapped tasks (``EpochProgram.vmapped``) each have their own state and labels; their
inputs are shared (one dataset, ``shared_inputs``) or their own ((T, N, ...) arrays), and
so is their batch order: with ``shared_order`` one key draws one permutation for every
task, so the gathered input batch is shared too and the first layer's product runs once
for all tasks' weights.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import TrainConfig, make_optimizer, steps_per_epoch
from .state import Anchor, Batch, TrainState, binary_metrics, make_train_step, model_functions

HISTORY_KEYS = (
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "param_distance",
    "param_distance_relative",
    "param_distance_squared",
)

# How often each epoch program was traced, by (mode, program): a diagnostic for tests
# (one trace per program, however many epochs and runs use it).
TRACES: collections.Counter = collections.Counter()


class TaskData(NamedTuple):
    """A task's arrays; with a leading task axis T where the program vmaps over them.

    Attributes:
        train_x: (N, H, W, C). train_y: (N,) labels in [0, 1].
        test_xb: (nb, eb, H, W, C) test inputs in zero-padded evaluation batches.
        test_yb: (nb, eb) test labels, padded. test_mask: (nb, eb) 1 valid, 0 padding.
    """

    train_x: jax.Array
    train_y: jax.Array
    test_xb: jax.Array
    test_yb: jax.Array
    test_mask: jax.Array


@dataclass(frozen=True)
class EpochProgram:
    """Static description of a compiled epoch (hashable: it keys the compile cache).

    Attributes:
        module: the model, with the convolution rule of its kind and mode set.
        kind: ``"network"``, ``"linear"`` or ``"linear_diff"``.
        cfg: the training config (epochs and batch size fix the schedule).
        n_train, n_test: samples per task.
        epoch_mode: ``"scan"`` or ``"loop"`` (resolved).
        vmapped: whether the program trains a leading axis of tasks.
        shared_inputs: vmapped tasks share ``train_x`` / ``test_xb`` (no task axis).
        shared_order: vmapped tasks share one key, hence one batch order.
    """

    module: nn.Module
    kind: str
    cfg: TrainConfig
    n_train: int
    n_test: int
    epoch_mode: str
    vmapped: bool = False
    shared_inputs: bool = True
    shared_order: bool = False

    @property
    def steps(self) -> int:
        return steps_per_epoch(self.n_train, self.cfg.batch_size)

    def optimizer(self):
        return make_optimizer(self.cfg, self.cfg.epochs * self.steps)

    def data_axes(self) -> TaskData:
        """vmap axes of :class:`TaskData`: labels always per task, inputs maybe shared."""
        x_axis = None if self.shared_inputs else 0
        return TaskData(x_axis, 0, x_axis, 0, None)

    def key_axis(self) -> int | None:
        return None if self.shared_order else 0


def _tree_sq_norm(tree: Any) -> jax.Array:
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree))


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def epoch_batches(key: jax.Array, epoch: jax.Array, n: int, batch: int):
    """The epoch's batch indices and mask, both (ceil(n / batch), batch).

    The permutation of ``fold_in(key, epoch)``, wrapped around to fill the last batch;
    wrapped positions have mask 0.
    """
    n_steps = steps_per_epoch(n, batch)
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    pos = jnp.arange(n_steps * batch)
    idx = perm[pos % n].reshape(n_steps, batch)
    mask = (pos < n).astype(jnp.float32).reshape(n_steps, batch)
    return idx, mask


def _batch(data: TaskData, idx_b: jax.Array, mask_b: jax.Array) -> Batch:
    return Batch(data.train_x[idx_b], data.train_y[idx_b], mask_b)


def _finish(program: EpochProgram, old, new, alive, anchor, data, loss_total, correct_total):
    """Test evaluation, distances, the finiteness guard: ``(state, alive, metrics)``."""
    _, eval_logits = model_functions(program.module, program.kind, anchor)

    def eval_batch(totals, inputs):
        xb, yb, mb = inputs
        loss_sum, correct = binary_metrics(eval_logits(new.params, new.model_state, xb), yb, mb)
        return (totals[0] + loss_sum, totals[1] + correct), None

    zero = jnp.zeros((), jnp.float32)
    (test_loss, test_correct), _ = jax.lax.scan(
        eval_batch, (zero, zero), (data.test_xb, data.test_yb, data.test_mask)
    )
    dist_sq = _tree_sq_norm(jax.tree_util.tree_map(jnp.subtract, new.params, anchor.params))
    norm0 = jnp.sqrt(_tree_sq_norm(anchor.params))
    metrics = {
        "train_loss": loss_total / program.n_train,
        "train_accuracy": correct_total / program.n_train,
        "test_loss": test_loss / program.n_test,
        "test_accuracy": test_correct / program.n_test,
        "param_distance": jnp.sqrt(dist_sq),
        "param_distance_relative": jnp.sqrt(dist_sq) / norm0,
        "param_distance_squared": dist_sq,
    }
    finite = (
        jnp.isfinite(metrics["train_loss"])
        & jnp.isfinite(metrics["test_loss"])
        & _tree_all_finite(new)
    )
    metrics["finite"] = finite
    keep = alive & finite
    state = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, old)
    return state, keep, metrics


@functools.lru_cache(maxsize=32)
def scan_epoch(program: EpochProgram):
    """``run(state, alive, anchor, data, key, epoch) -> (state, alive, metrics)``, jitted.

    ``state``: a :class:`TrainState` (task axis first when vmapped); ``alive``: () bool
    per task; ``anchor``: :class:`Anchor` (shared); ``data``: :class:`TaskData`;
    ``key``: the run's key (per task unless ``shared_order``); ``epoch``: () int.
    ``metrics``: ``HISTORY_KEYS`` and ``finite``, () per task.
    """
    optimizer = program.optimizer()

    def run(state: TrainState, alive, anchor: Anchor, data: TaskData, key, epoch):
        TRACES["scan", program] += 1
        train_logits, _ = model_functions(program.module, program.kind, anchor)
        train_step = make_train_step(train_logits, optimizer)
        idx, mask = epoch_batches(key, epoch, program.n_train, program.cfg.batch_size)

        def body(s, inputs):
            return train_step(s, _batch(data, *inputs))

        new, step_metrics = jax.lax.scan(body, state, (idx, mask))
        totals = (jnp.sum(step_metrics["loss_sum"]), jnp.sum(step_metrics["correct"]))
        return _finish(program, state, new, alive, anchor, data, *totals)

    if program.vmapped:
        run = jax.vmap(run, in_axes=(0, 0, None, program.data_axes(), program.key_axis(), None))
    return jax.jit(run)


@functools.lru_cache(maxsize=32)
def loop_epoch(program: EpochProgram):
    """Three jitted programs that run an epoch as a Python loop of donated steps.

    ``start(state, key, epoch) -> (work, idx, mask)`` draws the batch order and copies the
    state into a working tuple ``(state, loss_total, correct_total, step_index)``;
    ``step(work, anchor, data, idx, mask) -> work`` gathers batch ``step_index`` on the
    device (the working buffers are donated: updated in place);
    ``finish(state, alive, work, anchor, data) -> (state, alive, metrics)``.
    """
    optimizer = program.optimizer()

    def start(state, key, epoch):
        TRACES["loop", program] += 1
        idx, mask = epoch_batches(key, epoch, program.n_train, program.cfg.batch_size)
        zero = jnp.zeros((), jnp.float32)
        # A real copy: the working state is donated, and the epoch's start must survive
        # it (it is kept if the epoch ends non-finite).
        work = jax.tree_util.tree_map(jnp.copy, state)
        return (work, zero, zero, jnp.zeros((), jnp.int32)), idx, mask

    def step(work, anchor, data, idx, mask):
        state, loss_total, correct_total, i = work
        train_logits, _ = model_functions(program.module, program.kind, anchor)
        idx_b = jax.lax.dynamic_index_in_dim(idx, i, keepdims=False)
        mask_b = jax.lax.dynamic_index_in_dim(mask, i, keepdims=False)
        state, m = make_train_step(train_logits, optimizer)(state, _batch(data, idx_b, mask_b))
        return state, loss_total + m["loss_sum"], correct_total + m["correct"], i + 1

    def finish(state, alive, work, anchor, data):
        new, loss_total, correct_total, _ = work
        return _finish(program, state, new, alive, anchor, data, loss_total, correct_total)

    if program.vmapped:
        order = program.key_axis()
        start = jax.vmap(start, in_axes=(0, order, None), out_axes=(0, order, order))
        step = jax.vmap(step, in_axes=(0, None, program.data_axes(), order, order))
        finish = jax.vmap(finish, in_axes=(0, 0, 0, None, program.data_axes()))
    return (
        jax.jit(start),
        jax.jit(step, donate_argnums=0),
        jax.jit(finish, donate_argnums=2),
    )


def run_epoch(program: EpochProgram, state, alive, anchor, data, key, epoch):
    """One epoch in the program's mode; returns ``(state, alive, metrics)`` on the device
    (dispatched asynchronously: nothing waits for the result)."""
    if program.epoch_mode == "scan":
        return scan_epoch(program)(state, alive, anchor, data, key, epoch)
    start, step, finish = loop_epoch(program)
    work, idx, mask = start(state, key, epoch)
    for _ in range(program.steps):
        work = step(work, anchor, data, idx, mask)
    return finish(state, alive, work, anchor, data)
