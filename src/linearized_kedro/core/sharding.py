"""Spreading work over several devices with ``jax.sharding`` (DESIGN "Scale").

One axis, ``"data"``, over the visible devices: rows of an NTK feature block (docs/methods.md
§3.1) or tasks of a vmapped training sweep (docs/methods.md §3.2) are split along it, and the
jitted computations run partitioned by XLA (GSPMD). No ``pmap``. With one device every
helper is a no-op, so single- and multi-device runs share one code path.

Also the index partitioning used to split a sweep over independent jobs
(``eigen_training.partition`` / ``num_partitions``, Slurm job arrays), the split of a Gram's
tiles over ``jax.distributed`` processes, and the host's BLAS thread count.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def device_mesh(axis: str = DATA_AXIS, devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis ``Mesh`` over ``devices`` (default: this process's devices).

    Args:
        axis: the mesh axis name.
        devices: devices to use; default ``jax.local_devices()``. Local, not global:
            the Gram loop gathers every block on the host (see docs/scaling.md for
            several hosts).

    Returns:
        A ``Mesh`` of shape (n_devices,).
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("device_mesh needs at least one device; got an empty list.")
    return Mesh(np.asarray(devices, dtype=object), (axis,))


def resolve_mesh(mesh: Mesh | str | None) -> Mesh | None:
    """Turns a ``mesh=`` argument into a ``Mesh`` or ``None`` (no sharding).

    Args:
        mesh: ``"auto"`` (a mesh over all local devices when there are several, else
            ``None``), ``None`` (no sharding) or a ``Mesh`` (used as given).

    Returns:
        The mesh to shard over, or ``None``.
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    if mesh == "auto":
        return device_mesh() if jax.local_device_count() > 1 else None
    raise ValueError(f"mesh must be 'auto', None or a jax.sharding.Mesh; got {mesh!r}.")


def mesh_size(mesh: Mesh | None) -> int:
    """Number of devices in ``mesh`` (1 for ``None``)."""
    return 1 if mesh is None else int(mesh.devices.size)


def padded_size(n: int, mesh: Mesh | None) -> int:
    """Smallest multiple of the mesh size that is >= n (n itself without a mesh)."""
    k = mesh_size(mesh)
    return -(-int(n) // k) * k


def pad_rows(x: Any, n: int) -> jax.Array:
    """Pads the leading axis of ``x`` (m, ...) with zeros to (n, ...), n >= m."""
    x = jnp.asarray(x)
    m = x.shape[0]
    if n < m:
        raise ValueError(f"pad_rows: target {n} rows is fewer than the {m} rows of x.")
    if n == m:
        return x
    return jnp.concatenate([x, jnp.zeros((n - m, *x.shape[1:]), x.dtype)])


def shard_batch(x: Any, mesh: Mesh | None, axis: str = DATA_AXIS) -> Any:
    """Places the leading axis of every array in ``x`` across ``mesh``.

    Args:
        x: an array (B, ...) or a pytree of such arrays; B must be a multiple of the
            mesh size (use ``pad_rows`` / ``padded_size``).
        mesh: the mesh, or ``None`` to leave ``x`` where it is.
        axis: the mesh axis to split along.

    Returns:
        The same pytree with ``NamedSharding(mesh, P(axis))`` arrays.
    """
    if mesh is None:
        return x
    k = mesh_size(mesh)
    sharding = NamedSharding(mesh, PartitionSpec(axis))

    def put(a):
        a = jnp.asarray(a) if not isinstance(a, jax.Array) else a
        if a.ndim == 0 or a.shape[0] % k:
            raise ValueError(
                f"Cannot split an array of shape {a.shape} over {k} devices: the leading "
                f"axis must be a multiple of {k}; pad it with pad_rows(x, padded_size(n, mesh))."
            )
        return jax.device_put(a, sharding)

    return jax.tree_util.tree_map(put, x)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Copies every array of ``tree`` to all devices of ``mesh`` (no-op for ``None``)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def partition_indices(indices: Sequence[int], partition: int | None, num_partitions: int) -> list:
    """Every ``num_partitions``-th entry of ``indices``, starting at ``partition``.

    ``partition=3, num_partitions=8`` keeps entries 3, 11, 19, ... of the configured
    list: a job array of 8 jobs covers the list exactly once, with balanced work when
    the list is sorted by cost.

    Args:
        indices: the configured task list (e.g. eigenfunction indices).
        partition: 0 <= partition < num_partitions, or ``None`` for the whole list.
        num_partitions: number of jobs the list is split into (>= 1).

    Returns:
        The selected entries, in their configured order.
    """
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int | np.integer):
        raise ValueError(f"num_partitions must be an integer >= 1; got {num_partitions!r}.")
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1; got {num_partitions}.")
    if partition is None:
        if num_partitions != 1:
            raise ValueError(
                f"num_partitions={num_partitions} needs a partition index: pass "
                "--params <pipeline>.partition=<p> with 0 <= p < num_partitions."
            )
        return list(indices)
    if isinstance(partition, bool) or not isinstance(partition, int | np.integer):
        raise ValueError(f"partition must be an integer or null; got {partition!r}.")
    if not 0 <= partition < num_partitions:
        raise ValueError(
            f"partition={partition} is outside 0..{num_partitions - 1} "
            f"(num_partitions={num_partitions}); Slurm: use $SLURM_ARRAY_TASK_ID with "
            f"--array=0-{num_partitions - 1}."
        )
    selected = list(indices)[partition::num_partitions]
    if not selected:
        raise ValueError(
            f"Partition {partition} of {num_partitions} is empty: the list has only "
            f"{len(indices)} entries. Use num_partitions <= {len(indices)}."
        )
    return selected


def partition_key(partition: int | None, num_partitions: int) -> str:
    """File key of one partition's results, e.g. ``part-003-of-008``."""
    p = 0 if partition is None else int(partition)
    return f"part-{p:03d}-of-{int(num_partitions):03d}"


def process_info() -> tuple[int, int]:
    """(this process's index, number of processes) of the ``jax.distributed`` run."""
    return int(jax.process_index()), int(jax.process_count())


def split_tiles(keys: Sequence[Any], process_index: int, process_count: int) -> list:
    """The share of a tile list that one process of ``process_count`` computes.

    Contiguous, nearly equal chunks of the row-major tile list (sizes differ by at most
    one): consecutive tiles share their row block, so each process's feature cache keeps
    the reuse a single process has. Every tile belongs to exactly one process.

    Args:
        keys: all tile keys in computation order (``TiledGram.keys()``).
        process_index: 0 <= process_index < process_count.
        process_count: number of processes (>= 1).

    Returns:
        This process's keys, in the given order.
    """
    if isinstance(process_count, bool) or not isinstance(process_count, int | np.integer):
        raise ValueError(f"process_count must be an integer >= 1; got {process_count!r}.")
    if process_count < 1 or not 0 <= int(process_index) < process_count:
        raise ValueError(
            f"process_index={process_index} must satisfy 0 <= index < process_count="
            f"{process_count}."
        )
    keys = list(keys)
    base, extra = divmod(len(keys), int(process_count))
    start = int(process_index) * base + min(int(process_index), extra)
    stop = start + base + (1 if int(process_index) < extra else 0)
    return keys[start:stop]


def _cpu_sample() -> tuple[float, float, float] | None:
    """(busy, total) CPU seconds of the machine since boot (``/proc/stat``, all cores) and
    this process's own CPU seconds; ``None`` where ``/proc/stat`` is not readable."""
    try:
        with open("/proc/stat") as f:  # "cpu  user nice system idle iowait irq softirq steal"
            fields = [float(v) for v in f.readline().split()[1:9]]
        ticks = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) < 5:
        return None
    total = sum(fields) / ticks
    busy = total - (fields[3] + fields[4]) / ticks  # not idle, not waiting for I/O
    own = os.times()
    return busy, total, own.user + own.system


# The last reading of ``_cpu_sample`` as (pid, time.monotonic(), sample), first taken when
# this module is imported: a later ``busy_cores()`` in the same process measures over the
# time since, instead of sleeping through a window of its own. The pid matters: a forked
# child (e.g. of a process that imported the project once and forks runs) inherits the
# reading, but its own CPU times restart at zero, so the parent's reading is no start.
_LAST_READING: list = [None]
# Oldest reading ``busy_cores`` measures from; older ones are stale and a fresh window is
# taken.
_MAX_WINDOW_S = 10.0


def _remember(sample: tuple[float, float, float] | None) -> None:
    _LAST_READING[0] = None if sample is None else (os.getpid(), time.monotonic(), sample)


def busy_cores(
    window: float = 0.1, sample: Callable[[], tuple[float, float, float] | None] = _cpu_sample
) -> float | None:
    """Cores kept busy by *other* processes, measured over at least ``window`` seconds.

    The CPU time the machine spent busy in the window, less this process's own, in cores.
    With the default sampler the window starts at the previous reading of this process
    (taken when this module was imported, or by the previous call) when that is ``window``
    to 10 s old, so
    a ``kedro run`` measures over its start-up instead of sleeping 0.1 s; otherwise it
    sleeps through a fresh ``window``. ``None`` where it cannot be measured (no
    ``/proc/stat``).
    """
    first = None
    if sample is _cpu_sample and _LAST_READING[0] is not None:
        pid, taken, reading = _LAST_READING[0]
        if pid == os.getpid() and window <= time.monotonic() - taken <= _MAX_WINDOW_S:
            first = reading
    if first is None:
        first = sample()
        if first is None:
            return None
        time.sleep(window)
    second = sample()
    if sample is _cpu_sample:
        _remember(second)
    if second is None:
        return None
    busy, total, own = (b - a for a, b in zip(first, second, strict=True))
    if total <= 0:
        return None
    cores = os.cpu_count() or 1
    return max(0.0, busy - own) / total * cores


_remember(_cpu_sample())


def host_threads(cores: int | None = None, load: float | None = None) -> int:
    """BLAS threads for host products: the cores not already busy, at least one.

    On a shared machine an oversubscribed BLAS is slower than a single thread: measured on
    the 2-core development CPU at load average ~6.5, LeNet's N = 4000 spectrum took 16 s
    with 2 OpenBLAS threads and 9-14 s with one (float64 GEMM 19 vs 33 GFLOP/s). On an
    idle machine this is every core (5.0 s with 2 threads against 6.0 s with one).

    What "busy" means: by default the busy cores are measured (:func:`busy_cores`, at least
    0.1 s of ``/proc/stat``), not read from the load average, which can sit well above the busy
    cores: on the development machine it read 1.6 while ``/proc/stat`` showed both cores
    idle, and the load-average rule then ran the products on one core. The 1-minute load
    average is the fallback where nothing can be measured.

    Args:
        cores: CPU cores (default ``os.cpu_count()``).
        load: cores busy with other work (default: measured, else the load average).
    """
    cores = int(cores or os.cpu_count() or 1)
    if load is None:
        load = busy_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # platforms without a load average
            load = 0.0
    return max(1, min(cores, round(cores - float(load))))


# Host threads granted by the innermost ``host_blas_threads`` block (None: no block).
_HOST_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "host_threads", default=None
)


def granted_host_threads() -> int:
    """Threads host-side loops may use: those of the enclosing ``host_blas_threads``
    block, else every core (what BLAS itself would use)."""
    granted = _HOST_THREADS.get()
    return max(1, granted if granted is not None else os.cpu_count() or 1)


@contextlib.contextmanager
def host_blas_threads(threads: int | str | None = None) -> Iterator[int]:
    """Limits BLAS to ``threads`` inside the block.

    ``threads``: a count; ``"all"`` (every core: the same machine gives the same bits
    whatever its load, since the rounding of BLAS products and LAPACK eigensolvers depends
    on the thread count); ``"free"`` or ``None`` (the cores other processes leave idle,
    ``host_threads()``). An explicit ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
    environment is respected (the block then changes nothing).

    Yields:
        The thread count in effect.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            n = int(os.environ[var])
            token = _HOST_THREADS.set(n)
            try:
                yield n
            finally:
                _HOST_THREADS.reset(token)
            return
    if threads is None or threads == "free":
        n = host_threads()
    elif threads == "all":
        n = os.cpu_count() or 1
    else:
        n = int(threads)
    token = _HOST_THREADS.set(n)
    try:
        with blas_limit(n):
            yield n
    finally:
        _HOST_THREADS.reset(token)


_CONTROLLER: list[ThreadpoolController] = []


def blas_limit(threads: int):
    """A context limiting the BLAS libraries loaded in this process to ``threads`` threads.

    ``threadpoolctl.threadpool_limits`` looks the loaded libraries up again on every call
    (~1 ms with JAX loaded; the eigensolver enters a limit a dozen times per solve); the
    controller made on first use (after importing SciPy's BLAS) is reused.
    """
    if not _CONTROLLER:
        import scipy.linalg  # noqa: F401  (its BLAS must be loaded before the controller looks)

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=int(threads), user_api="blas")
