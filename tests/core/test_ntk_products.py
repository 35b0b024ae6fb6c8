"""K·v and the rectangular kernel K_nm against the float64 explicit Gram."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from reference import TOLERANCES, explicit_gram, rel_err

from linearized_kedro.core import ntk
from linearized_kedro.core.models import build_model, init_variables

F32 = TOLERANCES["float32"]


@pytest.fixture(scope="module")
def mlp():
    module = build_model({"name": "mlp", "features": (16, 12), "activation": "gelu"})
    variables = init_variables(module, 0, (4, 4, 3))
    x = jax.random.normal(jax.random.key(1), (10, 4, 4, 3))
    return module, variables, x, explicit_gram(module, variables, x)


def test_ntk_vector_product_matches_gram(mlp):
    module, variables, x, K = mlp
    v = np.asarray(jax.random.normal(jax.random.key(5), (x.shape[0], 3)))
    Kv = np.asarray(ntk.ntk_vector_product(module, variables, x, v), np.float64)
    np.testing.assert_allclose(Kv, K @ v, rtol=0, atol=F32 * np.abs(K @ v).max())
    assert rel_err(Kv, K @ v[::-1]) > 1e-2  # negative control: another vector
    kv1 = np.asarray(ntk.ntk_vector_product(module, variables, x, v[:, 0]))
    np.testing.assert_allclose(kv1, Kv[:, 0], rtol=1e-6, atol=1e-6 * np.abs(Kv).max())
    with pytest.raises(ValueError, match="shape"):
        ntk.ntk_vector_product(module, variables, x, v[:3])


def test_cross_gram_matches_columns_of_the_gram(mlp):
    module, variables, x, K = mlp
    idx = np.array([1, 4, 7])
    k_nm = ntk.ntk_cross_gram(module, variables, x, np.asarray(x)[idx])
    assert k_nm.shape == (10, 3) and k_nm.dtype == np.float64
    assert rel_err(k_nm, K[:, idx]) < F32
    assert rel_err(k_nm, K[:, idx[::-1]]) > 1e-2  # negative control: column order matters
    with pytest.raises(ValueError, match="budget"):
        ntk.ntk_cross_gram(module, variables, x, np.asarray(x)[idx], memory_budget_bytes=1000)
    with pytest.raises(ValueError, match="differ in shape"):
        ntk.ntk_cross_gram(module, variables, x, np.zeros((2, 3, 3, 3)))
