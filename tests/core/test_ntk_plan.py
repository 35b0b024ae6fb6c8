"""Layout and tiling plan of the Gram: which layers are structured, block sizes, FLOPs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables


@pytest.fixture(scope="module")
def lenet():
    module = build_model({"name": "lenet", "activation": "tanh"})
    return module, init_variables(module, 0, (8, 8, 3))


def test_structured_factorises_dense_and_conv_layers(lenet):
    module, variables = lenet
    plan = ntk.gram_plan(module, variables, 10, input_shape=(8, 8, 3))
    assert plan["method"] == "structured"
    assert plan["n_factorised_dense"] == 2 and plan["n_conv_sites"] == 2
    assert plan["feature_dim"] < plan["n_params"]
    jac = ntk.gram_plan(module, variables, 10, input_shape=(8, 8, 3), method="jacobian")
    assert jac["feature_dim"] == jac["n_params"] and jac["n_conv_sites"] == 0


def test_plan_for_another_method_sizes_blocks_differently(lenet):
    # The first wave's node planned with the default method and no input shape, then ran
    # with its configured method: under a tight budget the block sizes disagree.
    module, variables = lenet
    budget = 2**25
    auto = ntk.gram_plan(module, variables, 4000, input_shape=(8, 8, 3), memory_budget_bytes=budget)
    jac = ntk.gram_plan(
        module,
        variables,
        4000,
        input_shape=(8, 8, 3),
        memory_budget_bytes=budget,
        method="jacobian",
    )
    assert auto["block_size"] != jac["block_size"]
    no_shape = ntk.gram_plan(module, variables, 10)
    assert no_shape["n_conv_sites"] == 0  # without the input shape no conv is a site


def test_plan_is_the_plan_that_runs(lenet):
    module, variables = lenet
    x = jax.random.normal(jax.random.key(0), (10, 8, 8, 3))
    for products, dtype in (("host", np.float64), ("host", np.float32), ("device", np.float64)):
        kwargs = dict(method="auto", memory_budget_bytes=2**24, dtype=dtype, products=products)
        plan = ntk.gram_plan(module, variables, 10, input_shape=(8, 8, 3), **kwargs)
        job = ntk.TiledGram(module, variables, x, **kwargs)
        assert {k: job.plan[k] for k in plan} == plan


def test_gram_plan_counts():
    module = build_model({"name": "mlp", "features": (16, 12)})
    variables = init_variables(module, 0, (4, 4, 3))
    plan = ntk.gram_plan(module, variables, 4000, input_shape=(4, 4, 3), block_size=500)
    assert plan["n_blocks"] == 8 and plan["n_tiles"] == 36
    assert plan["explicit_gram_flops"] == 2 * 4000**2 * plan["n_params"]
    assert plan["estimated_product_flops"] < plan["explicit_gram_flops"]
    small = ntk.gram_plan(module, variables, 4000, input_shape=(4, 4, 3), memory_budget_bytes=2**22)
    assert small["block_size"] < 1000  # the default shrinks to fit the budget
    with pytest.raises(ValueError, match="positive number"):
        ntk.gram_plan(module, variables, 0)
