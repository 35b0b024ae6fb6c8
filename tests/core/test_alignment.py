"""Kernel alignment (SPEC §3.2 step 5) against an explicit float64 Jacobian."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linearized_kedro.core.alignment import kernel_alignment
from linearized_kedro.core.models import build_model, init_variables

CONFIGS = {
    "mlp": {"name": "mlp", "features": (6, 5)},
    "lenet": {"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)},
}


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(module, variables, x):
    """(N, P) Jacobian of the network (BN in inference mode), by reverse mode."""

    def f(params):
        return module.apply({**variables, "params": params}, x, train=False)[:, 0]

    jac = jax.jacrev(f)(variables["params"])
    return jnp.concatenate(
        [j.reshape(x.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)], axis=1
    )


def _explicit_gram(module, variables, x):
    jac = np.asarray(_jacobian(module, variables, x))
    return jac @ jac.T


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_alignment_at_init_equals_eigenvalues_and_explicit_formula(name):
    module = build_model(CONFIGS[name])
    rng = np.random.default_rng(0)
    n = 13
    train_idx = rng.permutation(n)[:9]
    test_idx = np.setdiff1d(np.arange(n), train_idx)
    with jax.enable_x64(True):
        variables = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64), init_variables(module, 0, (8, 8, 3))
        )
        x = rng.normal(size=(n, 8, 8, 3))
        gram = _explicit_gram(module, variables, x)
        lam, vecs = np.linalg.eigh(gram)
        lam, u = lam[::-1][:5], vecs[:, ::-1][:, :5].T
        # chunk 2 of 5 eigenvectors and batch 4 (remainders on both axes).
        out = kernel_alignment(module, variables, x, u, train_idx, test_idx, chunk=2, batch_size=4)
        np.testing.assert_allclose(out["all"], lam, rtol=1e-9)
        for part, idx in (("train", train_idx), ("test", test_idx)):
            sub = u[:, idx]
            expected = np.einsum("ki,ij,kj->k", sub, gram[np.ix_(idx, idx)], sub) / np.sum(
                sub**2, 1
            )
            np.testing.assert_allclose(out[part], expected, rtol=1e-9)
        np.testing.assert_allclose(out["trace"], np.trace(gram), rtol=1e-10)
        np.testing.assert_allclose(out["all_normalized"], lam / (np.trace(gram) / n), rtol=1e-9)
        # Away from θ0 and for non-eigenvectors: u^T Θ_end u / u^T u, with overlapping index sets.
        moved = jax.tree_util.tree_map(lambda a: a * 1.2 + 0.01, variables)
        gram_end = _explicit_gram(module, moved, x)
        v = rng.normal(size=(3, n))
        # Same chunk and batch as above: shapes (and compiled programs) are reused.
        out_end = kernel_alignment(
            module, moved, x, v, np.arange(n), test_idx, chunk=2, batch_size=4
        )
        np.testing.assert_allclose(
            out_end["all"], np.einsum("ki,ij,kj->k", v, gram_end, v) / np.sum(v**2, 1), rtol=1e-9
        )
        np.testing.assert_allclose(out_end["train"], out_end["all"], rtol=1e-9)


def test_float32_path_and_errors():
    module = build_model(CONFIGS["lenet"])
    variables = init_variables(module, 1, (8, 8, 3))
    x = np.random.default_rng(1).normal(size=(6, 8, 8, 3)).astype(np.float32)
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        gram = _explicit_gram(module, v64, x.astype(np.float64))
    u = np.linalg.eigh(gram)[1][:, ::-1][:, :2].T
    out = kernel_alignment(module, variables, x, u, np.arange(4), np.arange(4, 6))
    np.testing.assert_allclose(out["all"], np.linalg.eigvalsh(gram)[::-1][:2], rtol=1e-4)
    with pytest.raises(ValueError, match="eigvecs"):
        kernel_alignment(module, variables, x, u[:, :5], np.arange(4), np.arange(4, 6))
    with pytest.raises(ValueError, match="test_idx"):
        kernel_alignment(module, variables, x, u, np.arange(4), np.array([9]))
