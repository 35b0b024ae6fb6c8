"""Exact zero columns of the Jacobian (#11 §2) against the explicit float64 Jacobian.

ResNet18's zero-initialised last BN scale of each residual block (docs/methods.md §1.2) zeroes the
gradient of every parameter inside the branches at θ0. The reference Jacobian
(``tests/reference.py``) shows those columns are exact zeros; the pruned Gram must equal the
full explicit Gram. Negative control: with the zero scales set to non-zero values nothing is
dropped (and the pruned pass would otherwise be wrong).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import traverse_util
from jax.flatten_util import ravel_pytree
from reference import TOLERANCES, explicit_gram, explicit_jacobian, rel_err

from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables

F32 = TOLERANCES["float32"]


def _column_leaves(params) -> list[tuple[str, ...]]:
    """The flattened leaf key of every column of ``explicit_jacobian`` (ravel order)."""
    flat = traverse_util.flatten_dict(params)
    keys = sorted(flat)  # ravel_pytree order: sorted dict keys, depth first
    out = []
    for key in keys:
        out += [key] * int(np.size(flat[key]))
    assert len(out) == ravel_pytree(params)[0].size
    return out


def _unzeroed(variables):
    """θ0 with every zero BN scale set to 0.5: no structurally dead branch left."""

    def fix(path, leaf):
        if path[-1].key == "scale" and not np.any(np.asarray(leaf)):
            return np.full_like(np.asarray(leaf), 0.5)
        return leaf

    params = jax.tree_util.tree_map_with_path(fix, variables["params"])
    return {**variables, "params": params}


@pytest.fixture(scope="module")
def resnet():
    module = build_model({"name": "resnet18", "num_filters": 4, "stage_sizes": (1, 1)})
    variables = init_variables(module, 0, (4, 4, 3))
    x = jax.random.normal(jax.random.key(4), (6, 4, 4, 3))
    return module, variables, x


def test_dropped_leaves_are_exact_zero_columns(resnet):
    module, variables, x = resnet
    zc = ntk.find_zero_columns(module, variables, x, block_size=4)  # 2 blocks, one padded
    J = explicit_jacobian(module, variables, x)
    leaves = _column_leaves(variables["params"])
    dropped = set(zc.dropped)
    assert dropped, "the zero-initialised branches must be found"
    assert zc.dropped_params == sum(key in dropped for key in leaves)
    mask = np.array([key in dropped for key in leaves])
    # Σ_n ‖∂f(x_n)/∂θ_leaf‖² = 0 exactly for every dropped leaf, in float64:
    assert np.all(J[:, mask] == 0.0)
    # ... and every kept leaf except the zero BN scales' own gradients is non-zero.
    kept_norms = {key: 0.0 for key in set(leaves) - dropped}
    for col, key in enumerate(leaves):
        if key not in dropped:
            kept_norms[key] += float(np.sum(J[:, col] ** 2))
    assert all(v > 0 for v in kept_norms.values()), kept_norms
    # Every branch's inner convolutions and first BN are dropped; the stem, the head, the
    # projection shortcut and the branches' last BN are kept.
    names = {"/".join(k) for k in dropped}
    assert {"ResNetBlock_0/Conv_0/kernel", "ResNetBlock_0/Conv_1/kernel"} <= names
    assert "ResNetBlock_0/BatchNorm_0/scale" in names
    assert not any(n.startswith(("conv_init", "bn_init", "Dense_0")) for n in names)
    assert not any("conv_proj" in n or "norm_proj" in n or "BatchNorm_1" in n for n in names)
    report = zc.report()
    assert report["checked_samples"] == 6 and report["dropped_params"] == zc.dropped_params
    assert all(
        layer["max_abs_cotangent"] == 0.0 for layer in report["layers"].values() if layer["dropped"]
    )


def test_pruned_gram_equals_full_explicit_gram(resnet):
    module, variables, x = resnet
    ref = explicit_gram(module, variables, x)
    job = ntk.TiledGram(module, variables, x, block_size=4, drop_zero_columns=True)
    assert job.plan["dropped_params"] > 0.5 * job.plan["n_params"]
    assert job.plan["feature_dim"] == job.plan["n_params"] - job.plan["dropped_params"]
    K = job.gram()
    assert rel_err(K, ref) < F32
    on_device = ntk.ntk_gram(
        module, variables, x, block_size=4, drop_zero_columns=True, products="device"
    )
    assert rel_err(on_device, K) < 1e-12


def test_nothing_dropped_without_the_zero_init(resnet):
    module, _, x = resnet
    variables = _unzeroed(resnet[1])
    zc = ntk.find_zero_columns(module, variables, x, screen=False)
    assert zc.dropped == () and zc.dropped_params == 0 and zc.checked
    ref = explicit_gram(module, variables, x)
    K = ntk.ntk_gram(module, variables, x, block_size=4, drop_zero_columns=True)
    assert rel_err(K, ref) < F32
    # Negative control: forcing the zero-init's drop list on these weights is wrong.
    wrong = ntk.ntk_gram(
        module,
        variables,
        x,
        block_size=4,
        dropped=ntk.find_zero_columns(module, resnet[1], x).dropped,
    )
    assert rel_err(wrong, ref) > 1e-3


def test_models_without_dead_parameters_drop_nothing():
    module = build_model({"name": "lenet", "conv_features": (2, 3), "dense_features": (5,)})
    variables = init_variables(module, 0, (8, 8, 1))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
    zc = ntk.find_zero_columns(module, variables, x, screen=False)
    assert zc.dropped == () and zc.checked
    assert all(layer["max_abs_cotangent"] > 0 for layer in zc.report()["layers"].values())
    # The screen skips the pass: LeNet's θ0 has no all-zero weight or scale leaf.
    screened = ntk.find_zero_columns(module, variables, x)
    assert not screened.checked and screened.dropped == ()
    assert screened.report()["checked_samples"] == 0


def test_bad_combination_is_refused(resnet):
    module, variables, x = resnet
    with pytest.raises(ValueError, match="either dropped"):
        ntk.TiledGram(module, variables, x, dropped=[("Dense_0", "bias")], drop_zero_columns=True)
    with pytest.raises(ValueError, match="not parameters"):
        ntk.TiledGram(module, variables, x, dropped=[("nope", "kernel")])
