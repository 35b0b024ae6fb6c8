"""One training engine for networks and their linearisations (SPEC §1.5, §1.6, §4 items 8, 9, 15).

Differences from the original ``sgd_train`` (SPEC §1.6), all deliberate:

* There is one host round-trip per epoch (for history, progress and the divergence check),
  never one per step. ``TrainConfig.epoch_mode`` picks how the epoch runs, with the same
  numbers (to float32 rounding) either way: ``"scan"``, one compiled program (a ``lax.scan``
  over the batches followed by the test evaluation), or ``"loop"``, a Python loop over one
  compiled step per batch whose state buffers are donated and whose batch is gathered on the
  device from the epoch's permutation (metrics accumulate as device scalars). ``"auto"``
  is the scan (measured at least as fast, see ``resolve_epoch_mode``).
* The last partial batch is **masked, not dropped** (SPEC §4 item 9). Positions past the end of
  the epoch's permutation are filled by wrapping around the permutation, so BatchNorm in
  training mode sees real samples, but their loss weight is 0: every sample contributes
  exactly once per epoch and the step's loss is the mean over its valid samples.
  Consequently an epoch has ``ceil(N / batch_size)`` optimiser steps and the schedules'
  horizon is ``T = epochs * ceil(N / batch_size)``; the linear schedule is
  ``max_lr * (1 - t / T)`` for steps t = 0..T-1, reaching 0 at t = T, right after the last
  step, as in the original.
* Train metrics are averages over all samples of the epoch (evaluated with the parameters
  of the step that used them), not the last mini-batch. Test metrics cover every test
  sample (padded, masked batches).
* Per epoch we record ‖θ − θ0‖, ‖θ − θ0‖ / ‖θ0‖ and the squared distance under explicit
  names (SPEC §4 item 8); θ0 is the starting point (θc for ``linear_diff``).
* A non-finite loss or parameter stops the run; the result is flagged ``diverged`` and holds
  the parameters of the last finite epoch.

Under scan, convolutions are traced with hand-written derivative rules
(the modules' ``conv_autodiff`` attribute, ``layers.with_conv_autodiff``), because XLA:CPU runs autodiff's backward convolutions inside
``lax.scan`` an order of magnitude slower (measured 13x for LeNet); with them a scanned
LeNet epoch is about as fast as the loop (``benchmarks/README.md``, ``## training``). The
loop uses XLA's own derivatives.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import trange

from . import sharding
from .config import dataclass_from_mapping
from .layers import with_conv_autodiff
from .linearize import linearize, linearize_diff

logger = logging.getLogger(__name__)

SCHEDULES = ("linear", "fixed", "cyclic")
OPTIMIZERS = ("sgd", "adam")
KINDS = ("network", "linear", "linear_diff")
STRATEGIES = ("auto", "vmap", "sequential", "chunked")
EPOCH_MODES = ("auto", "scan", "loop")
HISTORY_KEYS = (
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "param_distance",
    "param_distance_relative",
    "param_distance_squared",
)
EVAL_BATCH_SIZE = 512


def _check_schedule_name(name: str) -> None:
    if name == "piecewise":
        raise ValueError(
            "lr_schedule 'piecewise' is not implemented (it raised in the original too, "
            f"SPEC §1.6). Use one of {SCHEDULES}."
        )
    if name not in SCHEDULES:
        raise ValueError(f"Unknown lr_schedule {name!r}. Valid schedules: {SCHEDULES}.")


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` block of the configuration (defaults of SPEC §1.6).

    Attributes:
        epochs: passes over the training set.
        max_lr: peak learning rate.
        lr_schedule: ``"linear"``, ``"fixed"`` or ``"cyclic"``.
        momentum: heavy-ball momentum of SGD (ignored by Adam).
        batch_size: samples per optimiser step.
        optimizer: ``"sgd"`` or ``"adam"``.
        epoch_mode: how an epoch is executed (same numbers either way): ``"scan"`` (one
            compiled ``lax.scan`` per epoch), ``"loop"`` (a Python loop over one compiled,
            buffer-donating step per batch; no host round-trip per step) or ``"auto"``
            (see ``resolve_epoch_mode``).
    """

    epochs: int = 100
    max_lr: float = 0.05
    lr_schedule: str = "linear"
    momentum: float = 0.9
    batch_size: int = 128
    optimizer: str = "sgd"
    epoch_mode: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "max_lr", float(self.max_lr))
        object.__setattr__(self, "momentum", float(self.momentum))
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1; got {self.epochs}.")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1; got {self.batch_size}.")
        if not self.max_lr > 0 or not math.isfinite(self.max_lr):
            raise ValueError(f"train.max_lr must be a positive number; got {self.max_lr}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"train.momentum must be in [0, 1); got {self.momentum}.")
        _check_schedule_name(self.lr_schedule)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.optimizer!r}. Valid: {OPTIMIZERS}.")
        if self.epoch_mode not in EPOCH_MODES:
            raise ValueError(f"Unknown train.epoch_mode {self.epoch_mode!r}. Valid: {EPOCH_MODES}.")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | TrainConfig | None) -> TrainConfig:
        """Builds a config from a parameters mapping, rejecting unknown keys."""
        if config is None:
            return cls()
        return dataclass_from_mapping(cls, config, "train")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps per epoch: ``ceil(n_train / batch_size)`` (last batch masked)."""
    return -(-int(n_train) // int(batch_size))


def make_schedule(name: str, max_lr: float, total_steps: int) -> optax.Schedule:
    """Learning-rate schedule of SPEC §1.6 over ``total_steps`` optimiser steps.

    Args:
        name: ``"linear"`` (max_lr·(1 − t/T), 0 from t = T), ``"fixed"`` or ``"cyclic"``
            (one-cycle triangle: max_lr/1e8 → max_lr at 0.4T → max_lr/1e8 at T and after).
        max_lr: peak learning rate.
        total_steps: T.

    Returns:
        ``schedule(step) -> lr`` (scalar).
    """
    _check_schedule_name(name)
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}.")
    if name == "linear":
        return optax.linear_schedule(max_lr, 0.0, int(total_steps))
    if name == "fixed":
        return optax.constant_schedule(max_lr)
    # pct_final = 1 puts both annealing breakpoints on step T; with div = final_div = 1e8
    # the value from T on is max_lr / 1e8 (the measured values of SPEC §1.6).
    return optax.linear_onecycle_schedule(
        int(total_steps),
        max_lr,
        pct_start=0.4,
        pct_final=1.0,
        div_factor=1e8,
        final_div_factor=1e8,
    )


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Heavy-ball SGD (m = g + μ·m; θ ← θ − lr·m) or Adam with the schedule of ``cfg``.

    Args:
        cfg: training config.
        total_steps: T, the schedule horizon (``epochs * steps_per_epoch``).
    """
    cfg = TrainConfig.from_dict(cfg)
    schedule = make_schedule(cfg.lr_schedule, cfg.max_lr, total_steps)
    if cfg.optimizer == "adam":
        return optax.adam(schedule)
    return optax.sgd(schedule, momentum=cfg.momentum, nesterov=False)


def binary_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array):
    """Masked sums of BCE-on-logits and of correct predictions.

    Accuracy follows SPEC §1.6: predicted class 1 iff logit > 0 (a logit of exactly 0 is
    class 0), true class 1 iff label > 0.5.

    Args:
        logits: (B,). labels: (B,) in [0, 1]. mask: (B,) 1 for valid samples, 0 for padding.

    Returns:
        (loss_sum, correct_sum) scalars.
    """
    losses = optax.sigmoid_binary_cross_entropy(logits, labels)
    correct = ((logits > 0) == (labels > 0.5)).astype(logits.dtype)
    return jnp.sum(jnp.where(mask > 0, losses, 0.0)), jnp.sum(correct * mask)


@dataclass
class TrainResult:
    """Outcome of one training run.

    Attributes:
        params: final parameters (the last finite ones if the run diverged).
        state: final non-trainable collections (BN stats; frozen for linear kinds).
        history: ``HISTORY_KEYS`` -> (epochs,) float arrays; NaN for epochs not run.
        final: the last completed epoch's metrics plus ``epochs_completed``.
        diverged: True if a non-finite loss or parameter stopped the run.
        kind: ``"network"``, ``"linear"`` or ``"linear_diff"``.
    """

    params: Any
    state: dict[str, Any]
    history: dict[str, np.ndarray]
    final: dict[str, float]
    diverged: bool
    kind: str


@dataclass(frozen=True)
class _Engine:
    """Static description of a compiled epoch (hashable: it keys the compile cache)."""

    module: nn.Module
    kind: str
    cfg: TrainConfig
    n_train: int
    n_test: int
    eval_batch: int
    has_state: bool
    epoch_mode: str


def _tree_sq_norm(tree: Any) -> jax.Array:
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree))


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _model_fns(engine: _Engine, ref: Mapping[str, Any]):
    """(train_logits(params, state, x) -> (logits, new_state), eval_logits(params, state, x))."""
    module = engine.module
    if engine.kind == "network":

        def train_logits(params, state, x):
            if engine.has_state:
                out, updates = module.apply(
                    {"params": params, **state}, x, train=True, mutable=list(state)
                )
                return out[:, 0], {**state, **updates}
            return module.apply({"params": params}, x, train=True)[:, 0], state

        def eval_logits(params, state, x):
            return module.apply({"params": params, **state}, x, train=False)[:, 0]

        return train_logits, eval_logits

    # Linear kinds: BN in inference mode with the frozen state of the linearisation point.
    def f(params, x):
        return module.apply({"params": params, **ref["state"]}, x, train=False)[:, 0]

    make = linearize if engine.kind == "linear" else linearize_diff
    f_model = make(f, ref["params0"])

    def train_logits(params, state, x):
        return f_model(params, x), state

    def eval_logits(params, state, x):
        del state
        return f_model(params, x)

    return train_logits, eval_logits


def _make_epoch_parts(engine: _Engine):
    """The pieces of one task's epoch (un-jitted); see the module docstring for semantics.

    Returns:
        (batches, step, finish, optimizer) where ``batches(key, epoch) -> (idx, mask)`` both
        (n_steps, batch); ``step(carry, ref, train_x, train_y, idx_b, mask_b) -> (carry,
        (loss_sum, correct))`` is one optimiser step; ``finish(old_carry, new_carry, ref,
        test_xb, test_mask, test_yb, loss_total, correct_total) -> (carry, metrics)``
        evaluates and keeps the old carry if the epoch was not finite.
    """
    cfg = engine.cfg
    n, batch = engine.n_train, cfg.batch_size
    n_steps = steps_per_epoch(n, batch)
    optimizer = make_optimizer(cfg, cfg.epochs * n_steps)

    def batches(key, epoch):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        pos = jnp.arange(n_steps * batch)
        idx = perm[pos % n].reshape(n_steps, batch)
        mask = (pos < n).astype(jnp.float32).reshape(n_steps, batch)
        return idx, mask

    def step(carry, ref, train_x, train_y, idx_b, mask_b):
        train_logits, _ = _model_fns(engine, ref)
        params, opt_state, state = carry

        def loss_fn(params, state):
            logits, new_state = train_logits(params, state, train_x[idx_b])
            loss_sum, correct = binary_metrics(logits, train_y[idx_b], mask_b)
            return loss_sum / jnp.sum(mask_b), (new_state, loss_sum, correct)

        grads, (state, loss_sum, correct) = jax.grad(loss_fn, has_aux=True)(params, state)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, state), (loss_sum, correct)

    def finish(carry, new_carry, ref, test_xb, test_mask, test_yb, loss_total, correct_total):
        _, eval_logits = _model_fns(engine, ref)
        params, _, state = new_carry

        def eval_batch(c, inputs):
            xb, yb, mb = inputs
            loss_sum, correct = binary_metrics(eval_logits(params, state, xb), yb, mb)
            return (c[0] + loss_sum, c[1] + correct), None

        (test_loss, test_correct), _ = jax.lax.scan(
            eval_batch, (jnp.float32(0), jnp.float32(0)), (test_xb, test_yb, test_mask)
        )
        dist_sq = _tree_sq_norm(jax.tree_util.tree_map(jnp.subtract, params, ref["params0"]))
        norm0 = jnp.sqrt(_tree_sq_norm(ref["params0"]))
        metrics = {
            "train_loss": loss_total / n,
            "train_accuracy": correct_total / n,
            "test_loss": test_loss / engine.n_test,
            "test_accuracy": test_correct / engine.n_test,
            "param_distance": jnp.sqrt(dist_sq),
            "param_distance_relative": jnp.sqrt(dist_sq) / norm0,
            "param_distance_squared": dist_sq,
        }
        finite = (
            jnp.isfinite(metrics["train_loss"])
            & jnp.isfinite(metrics["test_loss"])
            & _tree_all_finite(new_carry)
        )
        metrics["finite"] = finite
        # A diverged task keeps its last finite carry (matters in vmapped sweeps).
        new_carry = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), new_carry, carry
        )
        return new_carry, metrics

    return batches, step, finish, optimizer


@functools.lru_cache(maxsize=32)
def _compiled_scan_epoch(engine: _Engine, vmapped: bool):
    """``epoch(carry, ref, train_x, test_xb, test_mask, train_y, test_yb, key, epoch)``."""
    batches, step, finish, optimizer = _make_epoch_parts(engine)

    def epoch_fn(carry, ref, train_x, test_xb, test_mask, train_y, test_yb, key, epoch):
        idx, mask = batches(key, epoch)
        new_carry, (loss_sums, corrects) = jax.lax.scan(
            lambda c, inputs: step(c, ref, train_x, train_y, *inputs), carry, (idx, mask)
        )
        totals = (jnp.sum(loss_sums), jnp.sum(corrects))
        return finish(carry, new_carry, ref, test_xb, test_mask, test_yb, *totals)

    if vmapped:
        epoch_fn = jax.vmap(epoch_fn, in_axes=(0, None, None, None, None, 0, 0, 0, None))
    return jax.jit(epoch_fn), optimizer


@functools.lru_cache(maxsize=32)
def _compiled_loop_epoch(engine: _Engine, vmapped: bool):
    """Three compiled programs that run an epoch as a Python loop of donated steps.

    ``start(carry, key, epoch) -> (work, idx, mask)`` draws the permutation and copies the
    carry into a working state ``(carry, loss_total, correct_total, step_index)``;
    ``step(work, ref, train_x, train_y, idx, mask) -> work`` takes batch ``step_index`` from
    ``idx`` on the device, so the Python loop passes only device buffers (no host transfer
    per step) and the working state's buffers are donated (updated in place);
    ``finish(carry, work, ref, test_xb, test_mask, test_yb) -> (carry, metrics)``.
    """
    batches, step, finish, optimizer = _make_epoch_parts(engine)

    def start(carry, key, epoch):
        idx, mask = batches(key, epoch)
        zero = jnp.zeros((), jnp.float32)
        # A real copy: the working state is donated, the epoch's start must survive it
        # (it is kept if the epoch diverges).
        work = jax.tree_util.tree_map(jnp.copy, carry)
        return (work, zero, zero, jnp.zeros((), jnp.int32)), idx, mask

    def loop_step(work, ref, train_x, train_y, idx, mask):
        carry, loss_total, correct_total, i = work
        idx_b = jax.lax.dynamic_index_in_dim(idx, i, keepdims=False)
        mask_b = jax.lax.dynamic_index_in_dim(mask, i, keepdims=False)
        carry, (loss_sum, correct) = step(carry, ref, train_x, train_y, idx_b, mask_b)
        return carry, loss_total + loss_sum, correct_total + correct, i + 1

    def loop_finish(carry, work, ref, test_xb, test_mask, test_yb):
        new_carry, loss_total, correct_total, _ = work
        return finish(carry, new_carry, ref, test_xb, test_mask, test_yb, loss_total, correct_total)

    if vmapped:
        start = jax.vmap(start, in_axes=(0, 0, None))
        loop_step = jax.vmap(loop_step, in_axes=(0, None, None, 0, 0, 0))
        loop_finish = jax.vmap(loop_finish, in_axes=(0, 0, None, None, None, 0))
    return (
        jax.jit(start),
        jax.jit(loop_step, donate_argnums=0),
        jax.jit(loop_finish, donate_argnums=1),
        optimizer,
    )


def _run_epoch(engine, vmapped, carry, ref, train_x, test_xb, test_mask, ys, test_yb, keys, epoch):
    """One epoch in the engine's mode; returns (carry, metrics) as device arrays."""
    if engine.epoch_mode == "scan":
        fn, _ = _compiled_scan_epoch(engine, vmapped)
        return fn(carry, ref, train_x, test_xb, test_mask, ys, test_yb, keys, epoch)
    start, step, finish, _ = _compiled_loop_epoch(engine, vmapped)
    work, idx, mask = start(carry, keys, epoch)
    for _ in range(steps_per_epoch(engine.n_train, engine.cfg.batch_size)):
        work = step(work, ref, train_x, ys, idx, mask)
    return finish(carry, work, ref, test_xb, test_mask, test_yb)


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    if jnp.issubdtype(key.dtype, jnp.integer):
        return jax.vmap(jax.random.key)(key) if key.ndim else jax.random.key(int(key))
    raise ValueError(f"Expected a PRNG key (or integer seed); got dtype {key.dtype}.")


def _check_labels(name: str, labels: np.ndarray, n: int) -> None:
    if labels.shape[-1] != n:
        raise ValueError(f"{name} has {labels.shape[-1]} labels for {n} samples.")
    if not np.all(np.isfinite(labels)) or labels.min() < 0 or labels.max() > 1:
        raise ValueError(f"{name} must be finite and in [0, 1] (binary labels 0/1).")


def _pad_test(test_x: jax.Array, eval_batch: int):
    n = test_x.shape[0]
    nb = -(-n // eval_batch)
    pad = nb * eval_batch - n
    xb = jnp.concatenate([test_x, jnp.zeros((pad, *test_x.shape[1:]), test_x.dtype)])
    mask = (np.arange(nb * eval_batch) < n).astype(np.float32)
    return xb.reshape(nb, eval_batch, *test_x.shape[1:]), mask.reshape(nb, eval_batch), pad


# Convolution derivative rule per (kind, epoch mode), see layers.with_conv_autodiff. The
# hand-written rules exist for scan; a loop of compiled steps uses XLA's own
# (measured in benchmarks/README.md "## training").
_CONV_MODES = {
    ("network", "scan"): "vjp",
    ("linear", "scan"): "linearized",
    ("linear_diff", "scan"): "linearized",
    ("network", "loop"): "lax",
    ("linear", "loop"): "lax",
    ("linear_diff", "loop"): "lax",
}


def _conv_mode(kind: str, epoch_mode: str) -> str:
    return _CONV_MODES[kind, epoch_mode]


def resolve_epoch_mode(epoch_mode: str, params: Any) -> str:
    """Chooses how an epoch is executed (``TrainConfig.epoch_mode``).

    ``"auto"`` is ``"scan"``: with the hand-written convolution derivatives of
    ``layers.py`` a scanned LeNet epoch on a 2-core CPU was measured as fast as
    the loop of donated steps or faster (network 3.9 s vs 4.1-4.4 s per 4096 samples, linear
    model within noise), and for the MLP the scan is faster (0.15 s vs 0.18 s);
    ``benchmarks/README.md``, ``## training``. ``"loop"`` stays available as the fallback
    that does not depend on how XLA compiles loop bodies.

    Args:
        epoch_mode: ``"auto"``, ``"scan"`` or ``"loop"``.
        params: the parameter pytree (unused today; kept so the rule may depend on it).
    """
    del params
    if epoch_mode not in EPOCH_MODES:
        raise ValueError(f"Unknown epoch_mode {epoch_mode!r}. Valid: {EPOCH_MODES}.")
    return "scan" if epoch_mode == "auto" else epoch_mode


def _train_group(
    engine: _Engine,
    start_params: Any,
    start_state: dict[str, Any],
    ref: dict[str, Any],
    train_x: jax.Array,
    test_xb: jax.Array,
    test_mask: jax.Array,
    train_ys: np.ndarray,
    test_ys: np.ndarray,
    keys: jax.Array,
    *,
    vmapped: bool,
    progress: bool,
    mesh: Any = None,
) -> list[TrainResult]:
    """Trains G tasks together (vmapped) or one task (G = 1, not vmapped).

    With a ``mesh`` (vmapped only; G a multiple of its size) the task axis of the carry,
    labels and keys is split over the devices and the data replicated (DESIGN "Scale").
    """
    n_tasks = train_ys.shape[0]
    if not vmapped and n_tasks != 1:
        raise ValueError("A non-vmapped group holds exactly one task.")
    optimizer = make_optimizer(
        engine.cfg, engine.cfg.epochs * steps_per_epoch(engine.n_train, engine.cfg.batch_size)
    )
    nb, eb = test_mask.shape
    test_yb = np.concatenate(
        [test_ys, np.zeros((n_tasks, nb * eb - test_ys.shape[1]), np.float32)], axis=1
    ).reshape(n_tasks, nb, eb)
    carry = (start_params, optimizer.init(start_params), start_state)
    if vmapped:
        carry = jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a, (n_tasks, *jnp.shape(a))), carry
        )
        args = (jnp.asarray(train_ys), jnp.asarray(test_yb), keys)
        if mesh is not None:
            carry, args = sharding.shard_batch((carry, args), mesh)
            ref, train_x, test_xb, test_mask = sharding.replicate(
                (ref, train_x, test_xb, test_mask), mesh
            )
    else:
        args = (jnp.asarray(train_ys[0]), jnp.asarray(test_yb[0]), keys[0])
    epochs = engine.cfg.epochs
    history = {k: np.full((n_tasks, epochs), np.nan) for k in HISTORY_KEYS}
    alive = np.ones(n_tasks, bool)
    diverged = np.zeros(n_tasks, bool)
    for epoch in trange(epochs, disable=not progress, desc=f"train {engine.kind}"):
        carry, metrics = _run_epoch(
            engine, vmapped, carry, ref, train_x, test_xb, test_mask, *args, epoch
        )
        metrics = jax.device_get(metrics)
        metrics = {k: np.reshape(np.asarray(v), (n_tasks,)) for k, v in metrics.items()}
        for key in HISTORY_KEYS:
            history[key][alive, epoch] = metrics[key][alive]
        newly = alive & ~metrics["finite"]
        for task in np.flatnonzero(newly):
            logger.warning(
                "Task %d (%s) diverged in epoch %d (train loss %s); stopping it and "
                "keeping the parameters of the last finite epoch.",
                task,
                engine.kind,
                epoch,
                metrics["train_loss"][task],
            )
        diverged |= newly
        alive &= ~newly
        if not alive.any():
            break
    params, _, state = jax.device_get(carry)
    results = []
    for task in range(n_tasks):
        take = (lambda a, t=task: a[t]) if vmapped else (lambda a: a)
        hist = {k: v[task] for k, v in history.items()}
        done = np.flatnonzero(~np.isnan(hist["train_loss"]))
        last = int(done[-1]) if done.size else 0
        final = {k: float(v[last]) for k, v in hist.items()}
        final["epochs_completed"] = float(done.size)
        results.append(
            TrainResult(
                params=jax.tree_util.tree_map(take, params),
                state=jax.tree_util.tree_map(take, state),
                history=hist,
                final=final,
                diverged=bool(diverged[task]),
                kind=engine.kind,
            )
        )
    return results


def _prepare(module, variables0, kind, train_x, test_x, train_ys, test_ys, cfg, lin_point):
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}. Valid kinds: {KINDS}.")
    cfg = TrainConfig.from_dict(cfg)
    # jnp.asarray keeps arrays already on the device there (no host round trip).
    train_x = jnp.asarray(train_x, jnp.float32)
    test_x = jnp.asarray(test_x, jnp.float32)
    if train_x.ndim != 4 or test_x.ndim != 4 or train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"train_x and test_x must be (N, H, W, C) with the same image shape; got "
            f"{train_x.shape} and {test_x.shape}."
        )
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError("train_x and test_x must hold at least one sample each.")
    train_ys = np.asarray(train_ys, np.float32)
    test_ys = np.asarray(test_ys, np.float32)
    _check_labels("train labels", train_ys, train_x.shape[0])
    _check_labels("test labels", test_ys, test_x.shape[0])
    params0 = variables0["params"]
    state0 = {k: v for k, v in variables0.items() if k != "params"}
    if kind == "network":
        start_params, start_state = params0, state0
        ref = {"params0": params0, "state": {}}
    else:
        point = variables0 if lin_point is None else lin_point
        if kind == "linear" and lin_point is not None:
            raise ValueError(
                "linearization_point is only used by kind='linear_diff'; 'linear' always "
                "linearises around variables0."
            )
        start_params = point["params"]
        start_state = {k: v for k, v in point.items() if k != "params"}
        ref = {"params0": start_params, "state": start_state}
    eval_batch = min(EVAL_BATCH_SIZE, test_x.shape[0])
    test_xb, test_mask, _ = _pad_test(test_x, eval_batch)
    epoch_mode = resolve_epoch_mode(cfg.epoch_mode, start_params)
    engine = _Engine(
        with_conv_autodiff(module, _conv_mode(kind, epoch_mode)),
        kind,
        cfg,
        train_x.shape[0],
        test_x.shape[0],
        eval_batch,
        has_state=bool(start_state) and kind == "network",
        epoch_mode=epoch_mode,
    )
    data = (train_x, test_xb, jnp.asarray(test_mask))
    return engine, start_params, start_state, ref, data, train_ys, test_ys


def train_model(
    module: nn.Module,
    variables0: Mapping[str, Any],
    kind: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cfg: TrainConfig | Mapping[str, Any],
    key: jax.Array | int,
    *,
    linearization_point: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Trains a network or one of its linearisations with binary cross-entropy.

    Args:
        module: a module from ``models.build_model``.
        variables0: ``{'params': θ0, ['batch_stats': ...]}``; the starting point.
        kind: ``"network"`` (``module.apply``; BN in training mode, stats updated),
            ``"linear"`` (f(θ0,x) + J(θ0,x)(θ−θ0), BN frozen) or ``"linear_diff"``
            (J(θc,x)(θ−θc), started at θc, SPEC §1.5, §3.5).
        train_x: (N_train, H, W, C). train_y: (N_train,) labels in {0, 1}.
        test_x: (N_test, H, W, C). test_y: (N_test,).
        cfg: ``TrainConfig`` or its dict form.
        key: PRNG key or integer seed; epoch e shuffles with ``fold_in(key, e)``.
        linearization_point: for ``"linear_diff"``, the variables (θc and the BN state to
            freeze); defaults to ``variables0``.
        progress: show a tqdm bar over epochs.

    Returns:
        A ``TrainResult``.
    """
    engine, params, state, ref, data, train_ys, test_ys = _prepare(
        module,
        variables0,
        kind,
        train_x,
        test_x,
        np.asarray(train_y)[None],
        np.asarray(test_y)[None],
        cfg,
        linearization_point,
    )
    if train_ys.shape[0] != 1 or train_ys.ndim != 2 or test_ys.ndim != 2:
        raise ValueError("train_y and test_y must be 1-D label vectors.")
    keys = _as_key(key)
    if keys.shape != ():
        raise ValueError(f"train_model takes one key; got a key array of shape {keys.shape}.")
    return _train_group(
        engine,
        params,
        state,
        ref,
        *data,
        train_ys,
        test_ys,
        keys[None],
        vmapped=False,
        progress=progress,
    )[0]


def resolve_strategy(strategy: str, params: Any) -> str:
    """Chooses how a sweep batches its tasks.

    ``"auto"``: ``"vmap"`` on accelerators, ``"sequential"`` on CPU. On a 2-core CPU the
    vmapped sweep was measured slower than one task at a time for the MLP (8 tasks:
    0.91 s vs 0.75 s per epoch, an epoch being already compute-bound) and for LeNet, whose
    convolutions vmap turns into grouped convolutions (about 2x slower); see
    ``benchmarks/README.md`` (``## training``).

    Args:
        strategy: ``"auto"``, ``"vmap"``, ``"sequential"`` or ``"chunked"``.
        params: the parameter pytree (unused today; kept so the rule may depend on it).
    """
    del params
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown sweep strategy {strategy!r}. Valid: {STRATEGIES}.")
    if strategy != "auto":
        return strategy
    return "vmap" if jax.default_backend() != "cpu" else "sequential"


def train_sweep(
    module: nn.Module,
    variables0: Mapping[str, Any],
    kind: str,
    train_x: np.ndarray,
    train_ys: np.ndarray,
    test_x: np.ndarray,
    test_ys: np.ndarray,
    cfg: TrainConfig | Mapping[str, Any],
    keys: Sequence[Any] | jax.Array,
    *,
    strategy: str = "auto",
    chunk_size: int = 4,
    linearization_point: Mapping[str, Any] | None = None,
    progress: bool = False,
    mesh: Any = "auto",
) -> list[TrainResult]:
    """Trains T tasks (label sets) of one model kind from the same starting point.

    Task t uses labels ``train_ys[t]`` / ``test_ys[t]`` and key ``keys[t]``; its result is
    the same (to float tolerance) as ``train_model`` with those inputs, whatever the
    strategy.

    Args:
        module, variables0, kind, cfg, linearization_point: as in ``train_model``.
        train_x: (N_train, H, W, C). train_ys: (T, N_train).
        test_x: (N_test, H, W, C). test_ys: (T, N_test).
        keys: (T,) PRNG keys or integer seeds.
        strategy: ``"vmap"`` (all tasks in one program), ``"chunked"`` (vmap over groups of
            ``chunk_size``), ``"sequential"`` or ``"auto"`` (see ``resolve_strategy``).
        chunk_size: tasks per group for ``"chunked"``.
        progress: tqdm bars.
        mesh: for the vmapped strategies, ``"auto"`` (default: split the task axis over
            all local devices when there are several), ``None`` (one device) or a
            ``jax.sharding.Mesh`` (``core.sharding``). Groups are padded with copies of
            their last task to a multiple of the mesh size; the copies are dropped.

    Returns:
        T ``TrainResult``s in task order.
    """
    train_ys = np.asarray(train_ys, np.float32)
    test_ys = np.asarray(test_ys, np.float32)
    if train_ys.ndim != 2 or test_ys.ndim != 2 or train_ys.shape[0] != test_ys.shape[0]:
        raise ValueError(
            f"train_ys and test_ys must be (T, N) with the same T; got {train_ys.shape} and "
            f"{test_ys.shape}."
        )
    keys = _as_key(np.asarray(keys) if not isinstance(keys, jax.Array) else keys)
    if keys.shape != (train_ys.shape[0],):
        raise ValueError(f"Need one key per task ({train_ys.shape[0]}); got {keys.shape}.")
    engine, params, state, ref, data, train_ys, test_ys = _prepare(
        module, variables0, kind, train_x, test_x, train_ys, test_ys, cfg, linearization_point
    )
    strategy = resolve_strategy(strategy, params)
    n_tasks = train_ys.shape[0]
    if strategy == "sequential":
        groups, vmapped = [[t] for t in range(n_tasks)], False
    elif strategy == "vmap":
        groups, vmapped = [list(range(n_tasks))], True
    else:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
        size = int(chunk_size)
        groups = [list(range(s, min(s + size, n_tasks))) for s in range(0, n_tasks, size)]
        vmapped = True
    logger.info("Training %d %s tasks with strategy %r.", n_tasks, kind, strategy)
    mesh = sharding.resolve_mesh(mesh) if vmapped else None
    results: list[TrainResult] = []
    for group in groups:
        idx = np.asarray(group)
        pad = sharding.padded_size(len(idx), mesh) - len(idx)
        idx = np.concatenate([idx, np.repeat(idx[-1:], pad)])
        results += _train_group(
            engine,
            params,
            state,
            ref,
            *data,
            train_ys[idx],
            test_ys[idx],
            keys[idx],
            vmapped=vmapped,
            progress=progress,
            mesh=mesh,
        )[: len(group)]
    return results
