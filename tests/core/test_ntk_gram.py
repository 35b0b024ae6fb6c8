"""The tiled NTK Gram: every method and product path against the float64 J Jᵀ (docs/methods.md §1.4, §3.1).

References come from ``tests/reference.py`` (jacrev of the batched network on the flat
parameter vector, float64). Tolerances: ``TOLERANCES`` (float32 features accumulated in
float64: 1e-5 of max |K|; x64 paths: 1e-10).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import TOLERANCES, explicit_gram, rel_err

from linearized_kedro.core import ntk
from linearized_kedro.core.layers import Conv
from linearized_kedro.core.models import build_model, init_variables

F32 = TOLERANCES["float32"]
F64 = TOLERANCES["float64"]


class TinyConvNet(nn.Module):
    """Strided SAME (asymmetric pad), explicit-pad, 1x1 and Flax convs, then two Dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.tanh(Conv(3, (3, 3), strides=2, padding="SAME")(x))
        x = nn.tanh(Conv(4, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x))
        x = nn.tanh(nn.Conv(4, (1, 1), strides=(2, 2))(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.tanh(nn.Dense(7)(x))
        return nn.Dense(1)(x)


@pytest.fixture(scope="module")
def models():
    """name -> (module, variables, x) with tiny inputs; fixed seeds."""
    out = {}
    for name, cfg, shape, n in (
        ("mlp", {"name": "mlp", "features": (16, 12), "activation": "gelu"}, (4, 4, 3), 10),
        ("lenet", {"name": "lenet", "activation": "tanh"}, (8, 8, 3), 10),
    ):
        module = build_model(cfg)
        variables = init_variables(module, 0, shape)
        x = jax.random.normal(jax.random.key(1), (n, *shape))
        out[name] = (module, variables, x)
    module = TinyConvNet()
    x = jax.random.normal(jax.random.key(2), (7, 7, 7, 2))
    out["convnet"] = (module, init_variables(module, 3, (7, 7, 2)), x)
    return out


@pytest.fixture(scope="module")
def references(models):
    """name -> float64 reference Gram of ``models[name]`` (computed once per module)."""
    return {name: explicit_gram(*models[name]) for name in models}


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
@pytest.mark.parametrize("method", ["jacobian", "structured"])
def test_gram_matches_float64_reference(models, references, name, method):
    module, variables, x = models[name]
    K = ntk.ntk_gram(module, variables, x, method=method, block_size=4)
    assert K.shape == (x.shape[0],) * 2 and K.dtype == np.float64
    assert rel_err(K, references[name]) < F32
    np.testing.assert_array_equal(K, K.T)
    # Negative control: the Gram of other weights is far from the reference.
    other = init_variables(module, 7, x.shape[1:])
    assert (
        rel_err(ntk.ntk_gram(module, other, x, method=method, block_size=4), references[name])
        > 1e-2
    )


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_structured_gram_in_x64_is_exact(models, references, name):
    module, variables, x = models[name]
    ref = references[name]
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        K = ntk.ntk_gram(module, v64, jnp.asarray(x, jnp.float64), method="structured")
    assert rel_err(K, ref) < F64


def test_resnet_generic_jacobian_path():
    # Two one-block stages have every ResNet18 ingredient (BN in inference mode, zero-init
    # residual BN, strided projection shortcut) and compile fast.
    module = build_model({"name": "resnet18", "num_filters": 4, "stage_sizes": (1, 1)})
    variables = init_variables(module, 0, (4, 4, 3))
    x = jax.random.normal(jax.random.key(4), (4, 4, 4, 3))
    assert ntk.gram_plan(module, variables, 4, input_shape=(4, 4, 3))["method"] == "jacobian"
    K = ntk.ntk_gram(module, variables, x, block_size=2)  # 3 tiles from 2 blocks
    assert rel_err(K, explicit_gram(module, variables, x)) < F32


def test_gram_is_psd_and_independent_of_block_size(models):
    module, variables, x = models["lenet"]
    K1 = ntk.ntk_gram(module, variables, x, block_size=4)  # last block 2 rows, padded
    K2 = ntk.ntk_gram(module, variables, x)
    assert rel_err(K1, K2) < 1e-6
    assert np.linalg.eigvalsh(K1).min() > -1e-10 * np.abs(K1).max()


def test_float32_output(models, references):
    module, variables, x = models["mlp"]
    K = ntk.ntk_gram(module, variables, x, dtype=np.float32)
    assert K.dtype == np.float32
    assert rel_err(K, references["mlp"]) < F32


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
def test_float32_host_products_against_the_reference(models, references, name):
    # float32 features and GEMMs (chunks added in float64) round like float32 features:
    # within the float32 tolerance of the float64 reference, and visibly not the float64
    # products' numbers (the comparison can tell the two apart).
    module, variables, x = models[name]
    job = ntk.TiledGram(module, variables, x, host_precision="float32")
    assert job.precision == "float32" and job.plan["product_precision"] == "float32"
    K32 = job.gram()
    K64 = ntk.ntk_gram(module, variables, x, host_precision="float64")
    assert K32.dtype == np.float64
    assert rel_err(K32, references[name]) < F32
    assert not np.array_equal(K32, K64)
    assert rel_err(K32, K64) < F32
    # The plan holds float32 features: half the bytes per cached block.
    plan64 = ntk.gram_plan(module, variables, x.shape[0], input_shape=x.shape[1:])
    plan32 = ntk.gram_plan(
        module, variables, x.shape[0], input_shape=x.shape[1:], host_precision="auto"
    )
    assert plan32["bytes_per_block"] * 2 == plan64["bytes_per_block"]
    assert job.plan["bytes_per_block"] == plan32["bytes_per_block"]


def test_float32_host_chunks_cover_every_column(monkeypatch):
    from linearized_kedro.core.ntk import device, gram

    a = np.random.default_rng(0).standard_normal((5, 23)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((4, 23)).astype(np.float32)
    exact = a.astype(np.float64) @ b.T.astype(np.float64)
    monkeypatch.setattr(device, "CHUNK_COLUMNS", 4)  # 6 chunks, the last one shorter
    out = gram._dot_t_float32(a, b)
    assert out.dtype == np.float64 and np.abs(out - exact).max() < 1e-5
    # Negative control: dropping the last chunk's columns is detected.
    assert np.abs(gram._dot_t_float32(a[:, :20], b[:, :20]) - exact).max() > 1e-3


def test_host_precision_is_resolved_and_checked(models):
    assert ntk.resolve_host_precision("auto") == "float32"
    assert ntk.resolve_host_precision("auto", k=ntk.AUTO_FLOAT32_MAX_K) == "float32"
    assert ntk.resolve_host_precision("auto", k=ntk.AUTO_FLOAT32_MAX_K + 1) == "float64"
    assert ntk.resolve_host_precision("float32", k=1000) == "float32"
    assert ntk.resolve_host_precision("float64") == "float64"
    assert ntk.resolve_host_precision("float64", np.float32) == "float32"  # a float32 Gram
    module, variables, x = models["mlp"]
    with pytest.raises(ValueError, match="host precision must be one of"):
        ntk.ntk_gram(module, variables, x, host_precision="bfloat16")


def test_prefetched_blocks_are_computed_once_and_change_nothing(models):
    # The next block's pass is dispatched while this block's host work runs; each block
    # is still evaluated once, and the Gram equals the one computed block by block
    # (a budget that holds only two blocks: no room to prefetch, blocks recomputed).
    module, variables, x = models["lenet"]
    job = ntk.TiledGram(module, variables, x, block_size=3, prefetch=True)  # 4 blocks
    assert job._next_block(job.keys(), 0) == 1  # the tile after (0, 0) needs block 1
    K = job.gram()
    assert job.feature_block_evaluations == job.n_blocks == 4
    off = ntk.TiledGram(module, variables, x, block_size=3, prefetch=False)
    assert off._next_block(off.keys(), 0) is None
    np.testing.assert_array_equal(off.gram(), K)
    tight = _two_block_cache(job, module, variables, x, prefetch=True)
    assert tight.plan["cached_blocks"] == 2
    K_tight = tight.gram()
    assert tight.feature_block_evaluations > tight.n_blocks
    np.testing.assert_array_equal(K, K_tight)


def _two_block_cache(job, module, variables, x, *, prefetch):
    """A TiledGram like ``job`` (block_size 3) whose memory budget caches only two blocks."""
    budget = job.plan["estimated_peak_bytes"] - 2 * job.plan["bytes_per_block"]
    return ntk.TiledGram(
        module, variables, x, block_size=3, prefetch=prefetch, memory_budget_bytes=budget
    )


def test_features_first_when_every_block_fits(models, monkeypatch):
    # On a CPU (no prefetch) every block's features are computed before the first tile
    # when the cache holds them all; the Gram is the same, bit for bit.
    module, variables, x = models["lenet"]
    seen = []
    product = ntk.TiledGram._product

    def record(self, fi, fj):
        seen.append(self.feature_block_evaluations)
        return product(self, fi, fj)

    monkeypatch.setattr(ntk.TiledGram, "_product", record)
    job = ntk.TiledGram(module, variables, x, block_size=3, prefetch=False)  # 4 blocks
    K = job.gram()
    assert seen[0] == job.n_blocks == 4 and job.feature_block_evaluations == 4
    # Negative controls: a cache of two blocks, or prefetching, computes them as needed.
    seen.clear()
    tight = _two_block_cache(job, module, variables, x, prefetch=False)
    np.testing.assert_array_equal(tight.gram(), K)
    assert seen[0] == 1
    seen.clear()
    np.testing.assert_array_equal(
        ntk.TiledGram(module, variables, x, block_size=3, prefetch=True).gram(), K
    )
    assert seen[0] < 4
    monkeypatch.setattr(ntk.TiledGram, "_features_first", lambda self, keys: None)
    np.testing.assert_array_equal(
        ntk.TiledGram(module, variables, x, block_size=3, prefetch=False).gram(), K
    )


# --------------------------------------------------------------------------------------
# Device products (#11 §1), forced on this CPU
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
def test_device_products_equal_host_products(models, references, name):
    module, variables, x = models[name]
    host = ntk.ntk_gram(module, variables, x, block_size=4)
    on_device = ntk.ntk_gram(
        module, variables, x, block_size=4, products="device", device_precision="float64"
    )
    assert isinstance(on_device, np.ndarray) and on_device.dtype == np.float64
    # Same float32 features (conv rows formed on the device instead of the host), float64
    # products: equal to float64 round-off of the products, far below the float32 level.
    assert rel_err(on_device, host) < 1e-12
    np.testing.assert_array_equal(on_device, on_device.T)
    kept = ntk.ntk_gram(
        module,
        variables,
        x,
        block_size=4,
        products="device",
        device_precision="float64",
        gram_on_device=True,
    )
    assert isinstance(kept, jax.Array) and kept.dtype == jnp.float64
    np.testing.assert_array_equal(ntk.host_array(kept), on_device)
    # float32 chunks with float64 accumulation: float32-level agreement.
    f32 = ntk.ntk_gram(
        module, variables, x, block_size=4, products="device", device_precision="float32"
    )
    assert rel_err(f32, references[name]) < F32


def test_float32_chunks_cover_every_column(monkeypatch):
    # Several chunks and a ragged last chunk: small chunks on a wide MLP layer.
    from linearized_kedro.core.ntk import device

    monkeypatch.setattr(device, "CHUNK_COLUMNS", 7)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 30)), rng.standard_normal((4, 30))
    f = ntk.Features([jnp.asarray(a, jnp.float32)], [], [])
    g = ntk.Features([jnp.asarray(b, jnp.float32)], [], [])
    device._tile.clear_cache()
    tile = ntk.host_array(device.tile_product(f, g, "float32"))
    assert rel_err(tile, a.astype(np.float32).astype(np.float64) @ b.T.astype(np.float32)) < 1e-6
    # Negative control: dropping the last (ragged) chunk is visible.
    assert rel_err(tile, a[:, :28] @ b[:, :28].T) > 1e-3
    device._tile.clear_cache()


def test_precision_rule_is_measured():
    from linearized_kedro.core.ntk import device

    choice, rule = device.choose_precision("auto", size=256)
    assert choice in ("float64", "float32") and rule["choice"] == choice
    assert rule["float64_seconds"] > 0 and rule["float32_seconds"] > 0
    assert (rule["ratio"] <= rule["limit"]) == (choice == "float64")
    assert device.choose_precision("float32") == ("float32", None)
    with pytest.raises(ValueError, match="device precision"):
        device.choose_precision("tf32")


# --------------------------------------------------------------------------------------
# Resumption and failure modes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("products", ["host", "device"])
def test_interrupted_run_resumes_without_recomputing(models, products):
    module, variables, x = models["mlp"]
    kw = {"block_size": 4, "products": products}
    full = ntk.ntk_gram(module, variables, x, **kw)  # 3 blocks -> 6 tiles
    saved: dict = {}

    def crash_after_three(key, tile):
        if len(saved) == 3:
            raise RuntimeError("simulated interruption")
        assert isinstance(tile, np.ndarray)
        saved[key] = tile.copy()

    with pytest.raises(RuntimeError, match="simulated"):
        ntk.ntk_gram(module, variables, x, on_block=crash_after_three, **kw)
    assert len(saved) == 3
    new: list = []
    K = ntk.ntk_gram(
        module, variables, x, done_blocks=saved, on_block=lambda key, tile: new.append(key), **kw
    )
    np.testing.assert_array_equal(K, full)
    assert len(new) == 6 - 3 and not set(new) & set(saved)
    assert all(i <= j for i, j in new)
    # Negative control: a corrupted stored tile shows up in the result.
    bad = {key: tile + 1.0 for key, tile in saved.items()}
    assert not np.array_equal(ntk.ntk_gram(module, variables, x, done_blocks=bad, **kw), full)


@pytest.mark.parametrize("products", ["host", "device"])
def test_deferred_on_block_hands_over_nothing_early_and_everything_late(
    models, products, monkeypatch
):
    """``on_block_after_s``: a Gram finished before the deadline hands over nothing; past
    it, the tiles held so far (read back out of K) and then every tile at once, each once
    and equal to the tile handed over without deferral."""
    module, variables, x = models["mlp"]
    kw = {"block_size": 4, "products": products}  # 3 blocks -> 6 tiles
    direct: dict = {}
    full = ntk.ntk_gram(module, variables, x, on_block=direct.__setitem__, **kw)
    assert len(direct) == 6

    early: list = []
    K = ntk.ntk_gram(
        module, variables, x, on_block=lambda *a: early.append(a), on_block_after_s=3600, **kw
    )
    np.testing.assert_array_equal(K, full)
    assert early == []

    # A clock that advances 1 s per reading: the deadline (2.5 s after the start) passes
    # at the third tile, which hands over tiles 1-3 together, then tiles 4-6 one by one.
    from linearized_kedro.core.ntk import gram as gram_module

    readings = []

    def clock():
        readings.append(None)
        return float(len(readings) - 1)

    monkeypatch.setattr(gram_module, "_clock", clock)
    late: list = []
    K = ntk.ntk_gram(
        module,
        variables,
        x,
        on_block=lambda key, tile: late.append((key, tile.copy(), len(readings))),
        on_block_after_s=2.5,
        **kw,
    )
    np.testing.assert_array_equal(K, full)
    # Clock readings when each tile was handed over: the start, then one per placed tile.
    assert [n for _, _, n in late] == [4, 4, 4, 5, 6, 7]
    keys = [key for key, _, _ in late]
    assert keys == sorted(direct) and len(set(keys)) == 6
    for key, tile, _ in late:
        assert isinstance(tile, np.ndarray) and tile.flags.c_contiguous
        np.testing.assert_array_equal(tile, direct[key])
    if products == "device":  # tiles read back out of a Gram assembled on the device
        readings.clear()
        on_device: dict = {}
        ntk.ntk_gram(
            module,
            variables,
            x,
            on_block=on_device.__setitem__,
            on_block_after_s=2.5,
            gram_on_device=True,
            **kw,
        )
        assert sorted(on_device) == sorted(direct)
        for key, tile in on_device.items():
            np.testing.assert_array_equal(tile, direct[key])
    # Negative control: the mirrored (lower) copy of an off-diagonal tile is its transpose,
    # which the comparison above would have caught had it been read instead.
    (i, j) = next(key for key in direct if key[0] != key[1])
    assert not np.array_equal(direct[(i, j)].T, direct[(i, j)])


def test_done_blocks_from_another_tiling_are_rejected(models):
    module, variables, x = models["mlp"]
    with pytest.raises(ValueError, match="block_size"):
        ntk.ntk_gram(module, variables, x, block_size=3, done_blocks={(0, 0): np.zeros((4, 4))})
    with pytest.raises(ValueError, match="upper-triangle"):
        ntk.ntk_gram(module, variables, x, block_size=3, done_blocks={(1, 0): np.zeros((3, 3))})


def test_missing_tiles_are_refused(models):
    module, variables, x = models["mlp"]
    job = ntk.TiledGram(module, variables, x, block_size=4)
    tiles = dict(job.compute(job.keys()[:-1]))
    with pytest.raises(ValueError, match="1 of 6 Gram tiles are missing"):
        job.assemble(tiles.items())


@pytest.mark.parametrize(
    ("method", "products"), [("jacobian", "host"), ("structured", "host"), ("auto", "device")]
)
def test_nan_tile_is_named(models, method, products):
    module, variables, x = models["mlp"]
    x = x.at[9, 0, 0, 0].set(jnp.nan)  # sample 9 is in the last (padded) block
    with pytest.raises(ValueError, match=r"NTK tile \(0, 2\)"):
        ntk.ntk_gram(module, variables, x, method=method, block_size=4, products=products)


def test_bad_arguments(models):
    module, variables, x = models["lenet"]
    with pytest.raises(ValueError, match="at least"):
        ntk.ntk_gram(module, variables, x, memory_budget_bytes=1000)
    with pytest.raises(ValueError, match="Unknown Gram method"):
        ntk.ntk_gram(module, variables, x, method="fast")
    with pytest.raises(ValueError, match="'params'"):
        ntk.ntk_gram(module, variables["params"], x)
    with pytest.raises(ValueError, match="dtype"):
        ntk.ntk_gram(module, variables, x, dtype=np.int32)
    with pytest.raises(ValueError, match="products"):
        ntk.ntk_gram(module, variables, x, products="gpu")
    with pytest.raises(ValueError, match="gram_on_device"):
        ntk.ntk_gram(module, variables, x, gram_on_device=True)
