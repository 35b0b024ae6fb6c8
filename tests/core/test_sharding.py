"""Sharding helpers and the multi-device NTK Gram (DESIGN "Scale").

The multi-device checks run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``: the flag is read once, when
JAX initialises its CPU backend, so it cannot be set inside this pytest process.
Tolerances: 4-device vs 1-device Gram, float64 products of float32 features, relative
to max |K|: 1e-5; vmapped sweep, float32 parameters and losses after 2 epochs: 1e-5
absolute (the only difference is how XLA partitions the same float32 program).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from linearized_kedro.core import sharding

SHARDED_RTOL = 1e-5


# --------------------------------------------------------------------------------------
# Index partitions (job arrays)
# --------------------------------------------------------------------------------------


def test_partitions_cover_the_list_exactly_once():
    indices = [0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50]
    parts = [sharding.partition_indices(indices, p, 4) for p in range(4)]
    assert parts[3] == [3, 15]  # positions 3 and 7
    assert parts[0] == [0, 5, 20]  # positions 0, 4, 8
    assert sorted(sum(parts, [])) == sorted(indices)
    assert sharding.partition_indices(indices, None, 1) == indices
    assert sharding.partition_key(3, 8) == "part-003-of-008"


@pytest.mark.parametrize(
    ("partition", "num", "match"),
    [
        (4, 4, "outside 0..3"),
        (-1, 4, "outside"),
        (None, 3, "needs a partition index"),
        (0, 0, ">= 1"),
        (0, 2.5, "integer"),
        ("1", 2, "integer or null"),
        (5, 6, "empty"),
    ],
)
def test_bad_partitions_are_refused(partition, num, match):
    with pytest.raises(ValueError, match=match):
        sharding.partition_indices([1, 2, 3, 4, 5], partition, num)


def test_tile_split_covers_every_tile_once_in_contiguous_chunks():
    keys = [(i, j) for i in range(5) for j in range(i, 5)]  # 15 tiles
    parts = [sharding.split_tiles(keys, p, 4) for p in range(4)]
    assert [len(p) for p in parts] == [4, 4, 4, 3]
    assert sum(parts, []) == keys  # contiguous, in order, each tile exactly once
    assert sharding.split_tiles(keys, 0, 1) == keys
    assert sharding.split_tiles(keys[:2], 3, 4) == []  # more processes than tiles
    for bad in ((4, 4), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="process_"):
            sharding.split_tiles(keys, *bad)
    assert sharding.process_info() == (0, 1)


def test_host_threads_leave_busy_cores_alone(monkeypatch):
    assert sharding.host_threads(cores=2, load=0.0) == 2
    assert sharding.host_threads(cores=2, load=6.5) == 1  # oversubscribed: one thread
    assert sharding.host_threads(cores=16, load=3.2) == 13

    # The busy cores are measured from CPU times, less this process's own: a sampler that
    # reports the whole machine busy (nothing of it ours) gives every core as busy; one
    # where all the busy time is this process's own gives none.
    def sampler(samples):
        return lambda: samples.pop(0)

    cores = os.cpu_count() or 1
    others = sharding.busy_cores(0.0, sampler([(0.0, 0.0, 0.0), (1.0, 1.0, 0.0)]))
    assert others == pytest.approx(cores)
    ours = sharding.busy_cores(0.0, sampler([(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]))
    assert ours == 0.0
    assert sharding.busy_cores(0.0, lambda: None) is None
    assert sharding.busy_cores() is not None  # /proc/stat on Linux
    monkeypatch.setattr(sharding, "busy_cores", lambda: 1.0)  # the default asks the sampler
    assert sharding.host_threads(cores=2) == 1
    monkeypatch.setattr(sharding, "busy_cores", lambda: 0.0)
    assert sharding.host_threads(cores=2) == 2
    from threadpoolctl import threadpool_info

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    with sharding.host_blas_threads(1) as n:
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        assert n == 1 and blas and all(p["num_threads"] == 1 for p in blas)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # an explicit setting wins
    with sharding.host_blas_threads(1) as n:
        assert n == 3


def test_busy_cores_measure_since_the_last_reading_without_sleeping(monkeypatch):
    """A reading 0.1-10 s old starts the window (no sleep); a stale one or none sleeps."""
    sleeps = []
    monkeypatch.setattr(sharding.time, "sleep", sleeps.append)
    readings = iter([(5.0, 10.0, 1.0), (9.0, 20.0, 2.0), (9.5, 21.0, 2.0)])
    monkeypatch.setattr(sharding, "_cpu_sample", lambda: next(readings))
    now = sharding.time.monotonic()
    # A reading 2 s old: busy 4 of 10 CPU-s, 1 of them ours -> 3/10 of the cores; no sleep.
    pid = os.getpid()
    monkeypatch.setattr(sharding, "_LAST_READING", [(pid, now - 2.0, (1.0, 0.0, 0.0))])
    cores = os.cpu_count() or 1
    got = sharding.busy_cores(sample=sharding._cpu_sample)
    assert got == pytest.approx(0.3 * cores) and sleeps == []
    # That call's reading is the next window's start ... unless it is too fresh (< 0.1 s):
    # then a fresh window is sampled, with a sleep. Negative control for the reuse above.
    assert sharding._LAST_READING[0][2] == (5.0, 10.0, 1.0)
    assert sharding.busy_cores(sample=sharding._cpu_sample) == pytest.approx(0.5 * cores / 1.0)
    assert sleeps == [0.1]
    # A stale reading (over 10 s old) is not used either, nor one of another process (a
    # forked child inherits its parent's reading, but not its CPU times).
    for stale in ((pid, now - 60.0), (pid + 1, now - 2.0)):
        monkeypatch.setattr(sharding, "_LAST_READING", [(*stale, (0.0, 0.0, 0.0))])
        readings = iter([(0.0, 0.0, 0.0), (1.0, 2.0, 0.0)])
        monkeypatch.setattr(sharding, "_cpu_sample", lambda readings=readings: next(readings))
        assert sharding.busy_cores(sample=sharding._cpu_sample) == pytest.approx(0.5 * cores)
    assert sleeps == [0.1, 0.1, 0.1]


# --------------------------------------------------------------------------------------
# Helpers on this process's single CPU device
# --------------------------------------------------------------------------------------


def test_single_device_helpers_are_no_ops():
    assert sharding.resolve_mesh("auto") is None or jax.local_device_count() > 1
    assert sharding.resolve_mesh(None) is None
    assert sharding.mesh_size(None) == 1
    x = np.arange(6.0).reshape(3, 2)
    assert sharding.shard_batch(x, None) is x
    with pytest.raises(ValueError, match="mesh must be"):
        sharding.resolve_mesh("all")


def test_padding_and_divisibility_checks():
    mesh = sharding.device_mesh()  # one device here
    assert sharding.padded_size(5, mesh) == 5
    padded = sharding.pad_rows(np.ones((3, 2)), 5)
    np.testing.assert_array_equal(np.asarray(padded[3:]), 0.0)
    with pytest.raises(ValueError, match="fewer"):
        sharding.pad_rows(np.ones((3, 2)), 2)
    with pytest.raises(ValueError, match="empty"):
        sharding.device_mesh(devices=[])
    out = sharding.shard_batch({"a": np.ones((4, 2))}, mesh)
    assert out["a"].sharding.mesh.shape == {"data": 1}


# --------------------------------------------------------------------------------------
# Four simulated devices (subprocess)
# --------------------------------------------------------------------------------------

_FOUR_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from linearized_kedro.core import ntk, sharding
    from linearized_kedro.core.models import build_model, init_variables

    assert jax.local_device_count() == 4, jax.devices()
    out = {"devices": jax.local_device_count()}
    mesh = sharding.resolve_mesh("auto")
    out["auto_mesh_size"] = sharding.mesh_size(mesh)
    try:
        sharding.shard_batch(np.ones((6, 2)), mesh)
        out["indivisible_refused"] = False
    except ValueError:
        out["indivisible_refused"] = True
    xs = sharding.shard_batch(np.ones((8, 2)), mesh)
    out["shards"] = len({s.device for s in xs.addressable_shards})

    rng = np.random.default_rng(0)
    cases = {
        # 13 rows, block 5: ragged last block, 5 -> 8 rows padded for 4 devices
        "mlp": ({"name": "mlp", "features": [16, 16]}, (4, 4, 1), 13, 5, "auto"),
        # LeNet: explicit conv rows + structured dense layers
        "lenet": ({"name": "lenet", "conv_features": [2, 3], "dense_features": [8, 6]},
                  (12, 12, 1), 10, 4, "auto"),
        "mlp_jacobian": ({"name": "mlp", "features": [8]}, (3, 3, 1), 9, 4, "jacobian"),
    }
    for name, (cfg, shape, n, b, method) in cases.items():
        module = build_model(cfg)
        variables = init_variables(module, 0, shape)
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        one = ntk.ntk_gram(module, variables, x, block_size=b, method=method, mesh=None)
        four = ntk.ntk_gram(module, variables, x, block_size=b, method=method)  # auto
        out[name] = {
            "max_abs": float(np.max(np.abs(one))),
            "diff": float(np.max(np.abs(one - four))),
            "symmetric": bool(np.array_equal(four, four.T)),
        }

    # A vmapped sweep of 3 tasks: padded to 4 and split over the devices.
    from linearized_kedro.core.train import TrainConfig, train_sweep

    module = build_model({"name": "mlp", "features": [16]})
    variables = init_variables(module, 0, (4, 4, 1))
    xs = rng.normal(size=(80, 4, 4, 1)).astype(np.float32)
    ys = (rng.normal(size=(3, 80)) > 0).astype(np.float32)
    keys = jax.numpy.stack([jax.random.key(s) for s in range(3)])
    cfg = TrainConfig(epochs=2, batch_size=16, max_lr=0.05)
    args = (module, variables, "network", xs[:64], ys[:, :64], xs[64:], ys[:, 64:], cfg, keys)
    one = train_sweep(*args, strategy="vmap", mesh=None)
    four = train_sweep(*args, strategy="vmap")  # auto: 4 devices
    leaves = lambda r: jax.tree_util.tree_leaves(r.params)
    out["sweep"] = {
        "n_results": len(four),
        "loss_diff": max(
            abs(a.final["test_loss"] - b.final["test_loss"]) for a, b in zip(one, four)
        ),
        "param_diff": max(
            float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
            for a, b in zip(one, four)
            for p, q in zip(leaves(a), leaves(b))
        ),
        "tasks_differ": bool(one[0].final["test_loss"] != one[1].final["test_loss"]),
    }
    json.dump(out, sys.stdout)
    """
)


def run_with_devices(script: str, n_devices: int, timeout: float = 240) -> dict:
    """Runs ``script`` in a fresh Python with ``n_devices`` simulated CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four_device_results():
    return run_with_devices(_FOUR_DEVICE_SCRIPT, 4)


def test_four_devices_are_used_by_default(four_device_results):
    res = four_device_results
    assert res["devices"] == 4
    assert res["auto_mesh_size"] == 4  # sharded path is the default with >1 device
    assert res["shards"] == 4
    assert res["indivisible_refused"]


@pytest.mark.parametrize("case", ["mlp", "lenet", "mlp_jacobian"])
def test_sharded_gram_equals_single_device(four_device_results, case):
    res = four_device_results[case]
    assert res["symmetric"]
    assert res["diff"] <= SHARDED_RTOL * res["max_abs"], res


def test_sharded_sweep_equals_single_device(four_device_results):
    res = four_device_results["sweep"]
    assert res["n_results"] == 3  # the padding copy is dropped
    assert res["tasks_differ"]  # the comparison is not between identical tasks
    # float32 training, 2 epochs: only the partitioning of the same program differs
    assert res["loss_diff"] <= 1e-5
    assert res["param_diff"] <= 1e-5


def test_blas_limit_covers_every_blas_library_and_restores_it():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {
            i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
        }

    before = blas_threads()
    assert len(before) >= 2  # NumPy's and SciPy's OpenBLAS
    for _ in range(2):  # the second call reuses the controller
        with sharding.blas_limit(1):
            assert set(blas_threads().values()) == {1}
        assert blas_threads() == before
