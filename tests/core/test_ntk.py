"""NTK Gram tests: every method against an independent float64 J Jᵀ (SPEC §1.4, §3.1).

The reference Jacobian is ``jax.jacrev`` of the batched network on the flat parameter
vector (``ravel_pytree``): batched VJPs, no vmap over samples, no interceptors.
Tolerances (relative to max |K|): float32 paths 1e-5, float64 (x64) paths 1e-10.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from linearized_kedro.core import ntk
from linearized_kedro.core.layers import Conv
from linearized_kedro.core.models import build_model, init_variables

F32_RTOL = 1e-5
X64_RTOL = 1e-10


def reference_gram(module, variables, x) -> np.ndarray:
    """float64 J Jᵀ with J from jacrev on the flat parameter vector (under x64)."""
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        flat, unravel = ravel_pytree(v64["params"])
        state = {k: v for k, v in v64.items() if k != "params"}
        x64 = jnp.asarray(x, jnp.float64)

        def f(theta):
            return module.apply({"params": unravel(theta), **state}, x64, train=False)[:, 0]

        J = np.asarray(jax.jacrev(f)(flat))
    return J @ J.T


def rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


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
def references(models):
    """name -> float64 reference Gram of ``models[name]`` (computed once per module)."""
    return {name: reference_gram(*models[name]) for name in models}


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


@pytest.mark.parametrize("name", ["mlp", "lenet", "convnet"])
@pytest.mark.parametrize("method", ["jacobian", "structured"])
def test_gram_matches_float64_reference(models, references, name, method):
    module, variables, x = models[name]
    K = ntk.ntk_gram(module, variables, x, method=method, block_size=4)
    assert K.shape == (x.shape[0],) * 2 and K.dtype == np.float64
    assert rel_err(K, references[name]) < F32_RTOL
    np.testing.assert_array_equal(K, K.T)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_structured_gram_in_x64_is_exact(models, references, name):
    module, variables, x = models[name]
    ref = references[name]
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        K = ntk.ntk_gram(module, v64, jnp.asarray(x, jnp.float64), method="structured")
    assert rel_err(K, ref) < X64_RTOL


def test_structured_factorises_dense_and_conv_layers(models):
    module, variables, x = models["lenet"]
    plan = ntk.gram_plan(module, variables, 10, input_shape=x.shape[1:])
    assert plan["method"] == "structured"
    assert plan["n_factorised_dense"] == 2 and plan["n_conv_sites"] == 2
    assert plan["feature_dim"] < plan["n_params"]


@pytest.mark.parametrize(
    "stages",
    [(1, 1), pytest.param((2, 2, 2, 2), marks=pytest.mark.slow, id="resnet18")],
)
def test_resnet_generic_jacobian_path(stages):
    # (1, 1) has every ResNet18 ingredient (BN in inference mode, zero-init residual BN,
    # projection shortcut) and compiles fast; full ResNet18 depth is the slow variant.
    module = build_model({"name": "resnet18", "num_filters": 4, "stage_sizes": stages})
    variables = init_variables(module, 0, (8, 8, 3))
    x = jax.random.normal(jax.random.key(4), (4, 8, 8, 3))
    assert ntk.gram_plan(module, variables, 4, input_shape=(8, 8, 3))["method"] == "jacobian"
    K = ntk.ntk_gram(module, variables, x, block_size=2)  # 3 tiles from 2 blocks
    assert rel_err(K, reference_gram(module, variables, x)) < F32_RTOL


def test_flat_jacobian_matches_jacrev(models, references):
    module, variables, x = models["convnet"]
    J = np.asarray(ntk.flat_jacobian(module, variables, x), np.float64)
    assert J.shape == (x.shape[0], sum(np.size(a) for a in jax.tree.leaves(variables)))
    assert rel_err(J @ J.T, references["convnet"]) < F32_RTOL


def test_gram_is_psd_and_independent_of_block_size(models):
    module, variables, x = models["lenet"]
    K1 = ntk.ntk_gram(module, variables, x, block_size=3)  # last block is a single row
    K2 = ntk.ntk_gram(module, variables, x)
    assert rel_err(K1, K2) < 1e-6
    assert np.linalg.eigvalsh(K1).min() > -1e-10 * np.abs(K1).max()


def test_float32_output(models, references):
    module, variables, x = models["mlp"]
    K = ntk.ntk_gram(module, variables, x, dtype=np.float32)
    assert K.dtype == np.float32
    assert rel_err(K, references["mlp"]) < F32_RTOL


def test_interrupted_run_resumes_without_recomputing(models):
    module, variables, x = models["mlp"]
    full = ntk.ntk_gram(module, variables, x, block_size=3)  # 4 blocks -> 10 tiles
    saved: dict = {}

    def crash_after_three(key, tile):
        if len(saved) == 3:
            raise RuntimeError("simulated interruption")
        saved[key] = tile.copy()

    with pytest.raises(RuntimeError, match="simulated"):
        ntk.ntk_gram(module, variables, x, block_size=3, on_block=crash_after_three)
    assert len(saved) == 3
    new: list = []
    K = ntk.ntk_gram(
        module,
        variables,
        x,
        block_size=3,
        done_blocks=saved,
        on_block=lambda key, tile: new.append(key),
    )
    np.testing.assert_array_equal(K, full)
    assert len(new) == 10 - 3 and not set(new) & set(saved)
    assert all(i <= j for i, j in new)


def test_done_blocks_from_another_tiling_are_rejected(models):
    module, variables, x = models["mlp"]
    with pytest.raises(ValueError, match="block_size"):
        ntk.ntk_gram(module, variables, x, block_size=3, done_blocks={(0, 0): np.zeros((4, 4))})
    with pytest.raises(ValueError, match="upper-triangle"):
        ntk.ntk_gram(module, variables, x, block_size=3, done_blocks={(1, 0): np.zeros((3, 3))})


@pytest.mark.parametrize("method", ["jacobian", "structured"])
def test_nan_tile_is_named(models, method):
    module, variables, x = models["mlp"]
    x = x.at[7, 0, 0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"NTK tile \(0, 2\)"):
        ntk.ntk_gram(module, variables, x, method=method, block_size=3)


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


def test_gram_plan_counts(models):
    module, variables, _ = models["mlp"]
    plan = ntk.gram_plan(module, variables, 4000, block_size=500)
    assert plan["n_blocks"] == 8 and plan["n_tiles"] == 36
    assert plan["explicit_gram_flops"] == 2 * 4000**2 * plan["n_params"]
    assert plan["estimated_product_flops"] < plan["explicit_gram_flops"]


def test_ntk_vector_product_matches_gram(models, references):
    module, variables, x = models["mlp"]
    K = references["mlp"]
    v = np.asarray(jax.random.normal(jax.random.key(5), (x.shape[0], 3)))
    Kv = np.asarray(ntk.ntk_vector_product(module, variables, x, v), np.float64)
    np.testing.assert_allclose(Kv, K @ v, rtol=0, atol=F32_RTOL * np.abs(K @ v).max())
    kv1 = np.asarray(ntk.ntk_vector_product(module, variables, x, v[:, 0]))
    np.testing.assert_allclose(kv1, Kv[:, 0], rtol=1e-6, atol=1e-6 * np.abs(Kv).max())
    with pytest.raises(ValueError, match="shape"):
        ntk.ntk_vector_product(module, variables, x, v[:3])
