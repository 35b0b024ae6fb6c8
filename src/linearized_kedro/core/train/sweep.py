"""Training runs and sweeps of runs: ``train_model`` and ``train_sweep`` (docs/methods.md §1.5, §1.6).

A sweep trains T tasks (label sets, and optionally their own inputs) of one model kind
from one starting point. Its unit of work is a *group* of tasks trained by one compiled
epoch program: one task at a time (``"sequential"``), all tasks vmapped (``"vmap"``) or
vmapped groups of ``chunk_size`` (``"chunked"``). Tasks that share their key share their
batch order (the original's eigenfunction and NAD experiments use one training key for
every task), which lets a vmapped program gather each batch once for all tasks.

There is one host round trip per epoch (history, progress, stopping when every task has
diverged), never one per step, and it overlaps the next epoch: epoch e + 1 is dispatched
before the metrics of epoch e are read. A task whose epoch ends non-finite stops
(``diverged``) and keeps the parameters of its last finite epoch.

Under ``lax.scan`` convolutions use hand-written derivative rules (the module's
``conv_autodiff`` attribute, ``layers.with_conv_autodiff``), because XLA:CPU runs
autodiff's backward convolutions inside a scan an order of magnitude slower (measured 13x
for LeNet); a loop of compiled steps uses XLA's own (``benchmarks/README.md``, training).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding
from ..layers import with_conv_autodiff
from .config import EPOCH_MODES, TrainConfig
from .epoch import HISTORY_KEYS, EpochProgram, TaskData, run_epoch
from .progress import TrainingProgress, as_reporter
from .state import KINDS, Anchor, TrainState

logger = logging.getLogger(__name__)

STRATEGIES = ("auto", "vmap", "sequential", "chunked")
EVAL_BATCH_SIZE = 512

# Convolution derivative rule per (kind, epoch mode), see layers.with_conv_autodiff. The
# hand-written rules exist for scan; a loop of compiled steps uses XLA's own
# (measured in benchmarks/README.md "## training").
_CONV_RULES = {
    ("network", "scan"): "vjp",
    ("linear", "scan"): "linearized",
    ("linear_diff", "scan"): "linearized",
    ("network", "loop"): "lax",
    ("linear", "loop"): "lax",
    ("linear_diff", "loop"): "lax",
}


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


def resolve_epoch_mode(epoch_mode: str, params: Any) -> str:
    """Chooses how an epoch is executed (``TrainConfig.epoch_mode``).

    ``"auto"`` is ``"scan"``: with the hand-written convolution derivatives of
    ``layers.py`` a scanned LeNet epoch on a 2-core CPU was measured as fast as the loop of
    donated steps or faster (network 3.9 s vs 4.1-4.4 s per 4096 samples, linear model
    within noise), and for the MLP the scan is faster (0.15 s vs 0.18 s);
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


def _has_convolutions(params: Any) -> bool:
    # Convolution kernels are the only parameters with more than two axes (kh, kw, C, O).
    return any(np.ndim(leaf) > 2 for leaf in jax.tree_util.tree_leaves(params))


def resolve_strategy(
    strategy: str,
    params: Any,
    *,
    kind: str = "network",
    shared_order: bool = False,
    shared_inputs: bool = True,
    num_tasks: int | None = None,
) -> str:
    """Chooses how a sweep batches its tasks.

    ``"auto"`` is ``"sequential"`` for a single task and ``"vmap"`` on accelerators. On
    CPU it is ``"vmap"`` only where that was measured faster than one task at a time:
    tasks that share their inputs and their batch order (each input batch is then
    gathered once and the products with it cover every task's weights) of a model
    without convolutions, or of a linearisation: the convolutions of
    f(θ0, x) + J(θ0, x)(θ − θ0) have θ0 or x unbatched, which vmap folds into one wider
    convolution. A network's own convolutions, with weights and inputs both per task,
    become grouped convolutions, which XLA:CPU runs about 3x slower than the tasks one by
    one; independent batch orders or inputs lose the shared products. Measurements:
    ``benchmarks/README.md``, ``## training``.

    Args:
        strategy: ``"auto"``, ``"vmap"``, ``"sequential"`` or ``"chunked"``.
        params: the parameter pytree (convolution kernels are its leaves with 4 axes).
        kind: the model kind trained.
        shared_order: whether every task has the same key (hence batch order).
        shared_inputs: whether every task trains on the same inputs.
        num_tasks: the number of tasks, if known.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown sweep strategy {strategy!r}. Valid: {STRATEGIES}.")
    if strategy != "auto":
        return strategy
    if num_tasks == 1:
        return "sequential"
    if jax.default_backend() != "cpu":
        return "vmap"
    if not (shared_order and shared_inputs):
        return "sequential"
    return "vmap" if kind != "network" or not _has_convolutions(params) else "sequential"


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


def _eval_batches(a: Any, eval_batch: int, axis: int) -> jax.Array:
    """Zero-pads ``a`` along ``axis`` (n) to a multiple of ``eval_batch`` and splits it
    into (nb, eval_batch) there."""
    a = jnp.asarray(a)
    n = a.shape[axis]
    nb = -(-n // eval_batch)
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, nb * eval_batch - n)
    a = jnp.pad(a, pad)
    return a.reshape(*a.shape[:axis], nb, eval_batch, *a.shape[axis + 1 :])


@dataclass(frozen=True)
class _Sweep:
    """A sweep's inputs, checked and placed: everything but the grouping."""

    program: EpochProgram  # vmapped=False; groups derive their own
    anchor: Anchor
    start: TrainState
    frozen_state: dict[str, Any]
    data: TaskData  # labels with a task axis; inputs with one iff per-task inputs
    keys: jax.Array  # (T,)


def _prepare(module, variables0, kind, train_x, test_x, train_ys, test_ys, cfg, lin_point, keys):
    if kind not in KINDS:
        raise ValueError(f"Unknown model kind {kind!r}. Valid kinds: {KINDS}.")
    cfg = TrainConfig.from_dict(cfg)
    # jnp.asarray keeps arrays already on the device there (no host round trip).
    train_x = jnp.asarray(train_x, jnp.float32)
    test_x = jnp.asarray(test_x, jnp.float32)
    per_task = train_x.ndim == 5
    n_tasks = train_ys.shape[0]
    if train_x.ndim not in (4, 5) or test_x.ndim != train_x.ndim:
        raise ValueError(
            "train_x and test_x must both be (N, H, W, C), or both (T, N, H, W, C) for "
            f"per-task inputs; got {train_x.shape} and {test_x.shape}."
        )
    if train_x.shape[-3:] != test_x.shape[-3:]:
        raise ValueError(
            f"train_x and test_x must have the same image shape; got {train_x.shape} and "
            f"{test_x.shape}."
        )
    if per_task and (train_x.shape[0] != n_tasks or test_x.shape[0] != n_tasks):
        raise ValueError(
            f"Per-task inputs need one (N, H, W, C) array per task ({n_tasks}); got "
            f"{train_x.shape} and {test_x.shape}."
        )
    n_train, n_test = train_x.shape[-4], test_x.shape[-4]
    if n_train == 0 or n_test == 0:
        raise ValueError("train_x and test_x must hold at least one sample each.")
    _check_labels("train labels", train_ys, n_train)
    _check_labels("test labels", test_ys, n_test)
    params0 = variables0["params"]
    state0 = {k: v for k, v in variables0.items() if k != "params"}
    if kind == "linear" and lin_point is not None:
        raise ValueError(
            "linearization_point is only used by kind='linear_diff'; 'linear' always "
            "linearises around variables0."
        )
    if kind == "network":
        anchor, frozen, start_state = Anchor(params0, {}), {}, state0
        start_params = params0
    else:
        point = variables0 if lin_point is None else lin_point
        start_params = point["params"]
        frozen = {k: v for k, v in point.items() if k != "params"}
        anchor, start_state = Anchor(start_params, frozen), {}
    epoch_mode = resolve_epoch_mode(cfg.epoch_mode, start_params)
    program = EpochProgram(
        with_conv_autodiff(module, _CONV_RULES[kind, epoch_mode]),
        kind,
        cfg,
        n_train,
        n_test,
        epoch_mode,
        shared_inputs=not per_task,
    )
    eval_batch = min(EVAL_BATCH_SIZE, n_test)
    x_axis = 1 if per_task else 0
    test_mask = _eval_batches(jnp.ones(n_test, jnp.float32), eval_batch, 0)
    data = TaskData(
        train_x,
        jnp.asarray(train_ys),
        _eval_batches(test_x, eval_batch, x_axis),
        _eval_batches(test_ys, eval_batch, 1),
        test_mask,
    )
    start = TrainState.create(start_params, start_state, program.optimizer())
    return _Sweep(program, anchor, start, frozen, data, keys)


def _group_inputs(sweep: _Sweep, tasks: np.ndarray, vmapped: bool, shared_order: bool, mesh):
    """(program, state, alive, anchor, data, key) of a group of tasks."""
    program = sweep.program
    per_task_x = not program.shared_inputs
    take = (lambda a: a[tasks]) if vmapped else (lambda a: a[tasks[0]])
    data = TaskData(
        take(sweep.data.train_x) if per_task_x else sweep.data.train_x,
        take(sweep.data.train_y),
        take(sweep.data.test_xb) if per_task_x else sweep.data.test_xb,
        take(sweep.data.test_yb),
        sweep.data.test_mask,
    )
    key = sweep.keys[tasks[0]] if shared_order or not vmapped else sweep.keys[tasks]
    state, alive, anchor = sweep.start, jnp.array(True), sweep.anchor
    if vmapped:
        g = len(tasks)
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (g, *jnp.shape(a))), state)
        alive = jnp.ones(g, bool)
        program = dataclasses.replace(program, vmapped=True, shared_order=shared_order)
        if mesh is not None:
            # The task axis is split over the devices; what all tasks share is replicated.
            per_task = (state, alive, data.train_y, data.test_yb)
            state, alive, train_y, test_yb = sharding.shard_batch(per_task, mesh)
            xs = (data.train_x, data.test_xb)
            train_x, test_xb = (
                sharding.shard_batch(xs, mesh) if per_task_x else sharding.replicate(xs, mesh)
            )
            anchor, test_mask = sharding.replicate((anchor, data.test_mask), mesh)
            data = TaskData(train_x, train_y, test_xb, test_yb, test_mask)
            key = sharding.replicate(key, mesh) if shared_order else sharding.shard_batch(key, mesh)
    return program, state, alive, anchor, data, key


def _train_group(
    sweep: _Sweep,
    tasks: np.ndarray,
    *,
    vmapped: bool,
    shared_order: bool,
    reporter: TrainingProgress | None,
    labels: Sequence[str],
    mesh: Any = None,
) -> list[TrainResult]:
    """Trains the tasks ``tasks`` together (vmapped) or one task (not vmapped).

    ``labels``: one per task of ``tasks`` for the reporter; tasks labelled ``None``
    (copies padding a group to the mesh size) are trained but not reported.
    """
    if not vmapped and len(tasks) != 1:
        raise ValueError("A non-vmapped group holds exactly one task.")
    program, state, alive, anchor, data, key = _group_inputs(
        sweep, tasks, vmapped, shared_order, mesh
    )
    n_tasks, epochs = len(tasks), program.cfg.epochs
    history = {k: np.full((n_tasks, epochs), np.nan) for k in HISTORY_KEYS}
    host_alive = np.ones(n_tasks, bool)
    diverged = np.zeros(n_tasks, bool)

    def record(epoch: int, metrics: Mapping[str, Any]) -> None:
        metrics = {k: np.reshape(np.asarray(v), (n_tasks,)) for k, v in metrics.items()}
        if reporter is not None:
            reported = {k: v[:n_reported] for k, v in metrics.items()}
            reporter.end_epoch(epoch, reported, (host_alive & metrics["finite"])[:n_reported])
        for name in HISTORY_KEYS:
            history[name][host_alive, epoch] = metrics[name][host_alive]
        newly = host_alive & ~metrics["finite"]
        for task in np.flatnonzero(newly):
            logger.warning(
                "Task %d (%s) diverged in epoch %d (train loss %s); stopping it and "
                "keeping the parameters of the last finite epoch.",
                int(tasks[task]),
                program.kind,
                epoch,
                metrics["train_loss"][task],
            )
        diverged[:] |= newly
        host_alive[:] &= ~newly

    n_reported = sum(label is not None for label in labels)
    if reporter is not None:
        reporter.start_group(program.kind, labels[:n_reported], epochs)
    pending = None
    for epoch in range(epochs):
        if not host_alive.any():
            break
        state, alive, metrics = run_epoch(program, state, alive, anchor, data, key, epoch)
        if pending is not None:
            record(*pending)
        # Read in the next iteration, while the next epoch runs (one round trip per epoch).
        pending = (epoch, metrics)
    if pending is not None:
        record(*pending)
    params, model_state = jax.device_get((state.params, state.model_state))
    results = []
    for task in range(n_tasks):
        pick = (lambda a, t=task: a[t]) if vmapped else (lambda a: a)
        hist = {k: v[task] for k, v in history.items()}
        done = np.flatnonzero(~np.isnan(hist["train_loss"]))
        last = int(done[-1]) if done.size else 0
        final = {k: float(v[last]) for k, v in hist.items()}
        final["epochs_completed"] = float(done.size)
        results.append(
            TrainResult(
                params=jax.tree_util.tree_map(pick, params),
                state=(
                    jax.tree_util.tree_map(pick, model_state)
                    if program.kind == "network"
                    else jax.device_get(sweep.frozen_state)
                ),
                history=hist,
                final=final,
                diverged=bool(diverged[task]),
                kind=program.kind,
            )
        )
    if reporter is not None:
        reported = results[:n_reported]
        reporter.end_group([r.final for r in reported], [r.diverged for r in reported])
    return results


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
    progress: bool | TrainingProgress = False,
    task_label: str = "task",
) -> TrainResult:
    """Trains a network or one of its linearisations with binary cross-entropy.

    Args:
        module: a module from ``models.build_model``.
        variables0: ``{'params': θ0, ['batch_stats': ...]}``; the starting point.
        kind: ``"network"`` (``module.apply``; BN in training mode, stats updated),
            ``"linear"`` (f(θ0,x) + J(θ0,x)(θ−θ0), BN frozen) or ``"linear_diff"``
            (J(θc,x)(θ−θc), started at θc, docs/methods.md §1.5, §3.5).
        train_x: (N_train, H, W, C). train_y: (N_train,) labels in {0, 1}.
        test_x: (N_test, H, W, C). test_y: (N_test,).
        cfg: ``TrainConfig`` or its dict form.
        key: PRNG key or integer seed; epoch e shuffles with ``fold_in(key, e)``.
        linearization_point: for ``"linear_diff"``, the variables (θc and the BN state to
            freeze); defaults to ``variables0``.
        progress: a ``progress.TrainingProgress`` (bars or log lines per epoch, a log line
            at the end), ``True`` for an unnamed one, or ``False``.
        task_label: the task's name in progress reports (e.g. ``"j=10"``).

    Returns:
        A ``TrainResult``.
    """
    train_y, test_y = np.asarray(train_y, np.float32), np.asarray(test_y, np.float32)
    if train_y.ndim != 1 or test_y.ndim != 1:
        raise ValueError("train_y and test_y must be 1-D label vectors.")
    if np.ndim(train_x) != 4:
        raise ValueError(f"train_x must be (N, H, W, C); got shape {np.shape(train_x)}.")
    keys = _as_key(key)
    if keys.shape != ():
        raise ValueError(f"train_model takes one key; got a key array of shape {keys.shape}.")
    # One task of a sweep, trained on its own (not vmapped): the same program.
    return train_sweep(
        module,
        variables0,
        kind,
        train_x,
        train_y[None],
        test_x,
        test_y[None],
        cfg,
        keys[None],
        strategy="sequential",
        linearization_point=linearization_point,
        progress=progress,
        task_labels=[task_label],
    )[0]


def _all_equal(keys: jax.Array) -> bool:
    data = np.asarray(jax.random.key_data(keys))
    return bool(np.all(data == data[:1]))


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
    progress: bool | TrainingProgress = False,
    mesh: Any = "auto",
    task_labels: Sequence[str] | None = None,
) -> list[TrainResult]:
    """Trains T tasks of one model kind from the same starting point.

    Task t uses labels ``train_ys[t]`` / ``test_ys[t]``, key ``keys[t]`` and either the
    shared inputs or its own (``train_x[t]`` / ``test_x[t]``); its result is the same (to
    float tolerance) as ``train_model`` with those inputs, whatever the strategy.

    Args:
        module, variables0, kind, cfg, linearization_point: as in ``train_model``.
        train_x: (N_train, H, W, C) shared by every task, or (T, N_train, H, W, C).
        train_ys: (T, N_train).
        test_x: (N_test, H, W, C), or (T, N_test, H, W, C) (as ``train_x``).
        test_ys: (T, N_test).
        keys: (T,) PRNG keys or integer seeds. Tasks with equal keys have the same batch
            order; when all are equal a vmapped group draws it once.
        strategy: ``"vmap"`` (all tasks in one program), ``"chunked"`` (vmap over groups of
            ``chunk_size``), ``"sequential"`` or ``"auto"`` (see ``resolve_strategy``).
        chunk_size: tasks per group for ``"chunked"``.
        progress: a ``progress.TrainingProgress`` (an n-of-N bar over tasks, per task a bar
            with its loss and accuracies, or plain log lines when not on a terminal),
            ``True`` for an unnamed one, or ``False``.
        mesh: for the vmapped strategies, ``"auto"`` (default: split the task axis over
            all local devices when there are several), ``None`` (one device) or a
            ``jax.sharding.Mesh`` (``core.sharding``). Groups are padded with copies of
            their last task to a multiple of the mesh size; the copies are dropped.
        task_labels: (T,) names of the tasks in progress reports (default ``"task t"``),
            e.g. ``["j=1", "j=10"]``.

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
    n_tasks = train_ys.shape[0]
    if keys.shape != (n_tasks,):
        raise ValueError(f"Need one key per task ({n_tasks}); got {keys.shape}.")
    sweep = _prepare(
        module,
        variables0,
        kind,
        train_x,
        test_x,
        train_ys,
        test_ys,
        cfg,
        linearization_point,
        keys,
    )
    strategy = resolve_strategy(
        strategy,
        sweep.start.params,
        kind=kind,
        shared_order=_all_equal(keys),
        shared_inputs=sweep.program.shared_inputs,
        num_tasks=n_tasks,
    )
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
    if n_tasks > 1:
        logger.info("Training %d %s tasks with strategy %r.", n_tasks, kind, strategy)
    labels = [f"task {t}" for t in range(n_tasks)] if task_labels is None else list(task_labels)
    if len(labels) != n_tasks:
        raise ValueError(f"task_labels has {len(labels)} names for {n_tasks} tasks.")
    reporter = as_reporter(progress)
    if reporter is not None:
        reporter.start_sweep(kind, n_tasks)
    mesh = sharding.resolve_mesh(mesh) if vmapped else None
    results: list[TrainResult] = []
    for group in groups:
        idx = np.asarray(group)
        pad = sharding.padded_size(len(idx), mesh) - len(idx)
        idx = np.concatenate([idx, np.repeat(idx[-1:], pad)])
        shared_order = _all_equal(keys[idx])
        results += _train_group(
            sweep,
            idx,
            vmapped=vmapped,
            shared_order=shared_order,
            reporter=reporter,
            labels=[labels[t] for t in group] + [None] * pad,
            mesh=mesh,
        )[: len(group)]
    if reporter is not None:
        reporter.end_sweep()
    return results
