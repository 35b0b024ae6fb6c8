"""Tests of core/nads.py against explicit float64 mixed derivatives on tiny models."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree

from linearized_kedro.core import models, nads, spectrum

SHAPE = (4, 4, 1)  # D = 16: small enough for explicit float64 Jacobians.
TINY_LENET = {
    "name": "lenet",
    "activation": "gelu",
    "conv_features": [2, 3],
    "dense_features": [5, 4],
}
TINY_MLP = {"name": "mlp", "activation": "gelu", "features": [6, 5]}


@functools.cache
def _init(config_items, shape, seed):
    # Random θ of the right shapes (LeCun-normal kernels, zero biases as in Flax's init)
    # without Flax's eager initialisers, which take seconds per tiny model on CPU.
    module = models.build_model(dict(config_items))
    abstract = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    )
    params, state = models.split_variables(abstract)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if jax.tree_util.keystr(path).endswith("['bias']"):
            return np.zeros(leaf.shape, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    assert not state, "the tiny test models have no BatchNorm state"
    return module, jax.tree_util.tree_map_with_path(draw, params), {}


def _setup(config, shape=SHAPE, seed=0, dtype=jnp.float32):
    items = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items())
    module, params, state = _init(items, shape, seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    return module, params, state


def _explicit_operator(module, state, params, points):
    """A (P, D) as the average of per-point mixed derivatives, by jacfwd(jacrev) in the
    current precision: an implementation independent of ``mixed_derivative_operator``."""
    flat, unravel = ravel_pytree(params)
    shape = points.shape[1:]

    def f_one(theta, x):
        out = module.apply({"params": unravel(theta), **state}, x[None], train=False)
        return out[0, 0]

    mixed = jax.jit(jax.vmap(jax.jacfwd(jax.jacrev(f_one, argnums=0), argnums=1), (None, 0)))
    jac = np.asarray(mixed(flat, jnp.asarray(points, flat.dtype)))
    return jac.reshape(points.shape[0], flat.size, int(np.prod(shape))).mean(axis=0)


def test_adjoint_identity():
    with jax.enable_x64(True):
        module, params, state = _setup(TINY_LENET, dtype=jnp.float64)
        f = models.scalar_apply(module, state)
        points = nads.nad_points(SHAPE, 0.7, 3, jax.random.key(1))
        matvec, rmatvec, num_params, dim = nads.mixed_derivative_operator(f, params, points)
        rng = np.random.default_rng(0)
        v = rng.standard_normal(dim)
        u = rng.standard_normal(num_params)
        lhs = float(np.dot(np.asarray(matvec(jnp.asarray(v))), u))
        rhs = float(np.dot(v, np.asarray(rmatvec(jnp.asarray(u)))))
    assert abs(lhs) > 1e-6  # the identity must not hold trivially
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


def _explicit_gram(config, sigma: float, num_points: int):
    """(f, θ, points, G = AᵀA of the explicit operator), all float64: call it under x64."""
    module, params, state = _setup(config, dtype=jnp.float64)
    points = nads.nad_points(SHAPE, sigma, num_points, jax.random.key(2))
    a_ref = _explicit_operator(module, state, params, points)
    g_ref = a_ref.T @ a_ref
    assert np.abs(g_ref).max() > 0  # a zero operator would match anything
    return models.scalar_apply(module, state), params, points, g_ref


def _assert_gram_close(gram, g_ref):
    np.testing.assert_allclose(gram, g_ref, rtol=1e-9, atol=1e-12 * np.abs(g_ref).max())


def test_dense_gram_matches_explicit_float64_lenet_at_zero():
    with jax.enable_x64(True):
        f, params, points, g_ref = _explicit_gram(TINY_LENET, 0.0, 1)
        gram, used, _ = nads.nad_gram(f, params, points, method="dense", chunk_size=5)
    assert used == "dense"
    _assert_gram_close(gram, g_ref)


def test_both_methods_match_explicit_float64_mlp_random_points():
    with jax.enable_x64(True):
        f, params, points, g_ref = _explicit_gram(TINY_MLP, 0.5, 3)
        dense, _, _ = nads.nad_gram(f, params, points, method="dense", chunk_size=16)
        free, used, _ = nads.nad_gram(f, params, points, method="matrix_free", chunk_size=7)
    assert used == "matrix_free"
    for gram in (dense, free):
        _assert_gram_close(gram, g_ref)


def test_float32_grams_close_to_float64_reference():
    module, params32, state = _setup(TINY_MLP)
    f = models.scalar_apply(module, state)
    points = nads.nad_points(SHAPE, 0.0, 1, jax.random.key(0))
    # auto picks dense when P·D·4 bytes fit the budget, matrix-free otherwise.
    dense, used_big, _ = nads.nad_gram(f, params32, points, memory_budget_bytes=2**30)
    free, used_small, _ = nads.nad_gram(f, params32, points, memory_budget_bytes=16)
    assert (used_big, used_small) == ("dense", "matrix_free")
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params32)
        a_ref = _explicit_operator(module, state, params64, points)
    g_ref = a_ref.T @ a_ref
    np.testing.assert_allclose(dense, g_ref, atol=1e-5 * np.abs(g_ref).max())
    np.testing.assert_allclose(free, g_ref, atol=1e-5 * np.abs(g_ref).max())
    np.testing.assert_array_equal(free, free.T)
    with pytest.raises(ValueError, match="method must be"):
        nads.nad_gram(f, params32, points, method="svds")


def test_dense_nads_agree_with_matrix_free_eigsh():
    with jax.enable_x64(True):
        module, params, state = _setup(TINY_MLP, dtype=jnp.float64)
        f = models.scalar_apply(module, state)
        points = nads.nad_points(SHAPE, 0.0, 1, jax.random.key(0))
        result = nads.compute_nads(f, params, points)
        matvec, rmatvec, _, dim = nads.mixed_derivative_operator(f, params, points)
        op = scipy.sparse.linalg.LinearOperator(
            (dim, dim),
            matvec=lambda v: np.asarray(rmatvec(matvec(jnp.asarray(v.ravel())))),
            dtype=np.float64,
        )
        k = 4
        values, vectors = scipy.sparse.linalg.eigsh(op, k=k, which="LA", v0=np.ones(dim), tol=1e-12)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order].T
    # Leading eigenvalues are well separated here, so vectors are defined up to sign.
    gaps = np.diff(result.eigenvalues[: k + 1]) / result.eigenvalues[0]
    assert np.all(np.abs(gaps) > 1e-3)
    np.testing.assert_allclose(values, result.eigenvalues[:k], rtol=1e-9)
    cosines = np.abs(np.sum(vectors * result.nads[:k], axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=1e-9)


def test_nad_result_properties():
    module, params, state = _setup(TINY_MLP)
    f = models.scalar_apply(module, state)
    points = nads.nad_points(SHAPE, 0.0, 1, jax.random.key(0))
    result = nads.compute_nads(f, params, points)
    dim = int(np.prod(SHAPE))
    assert result.nads.shape == (dim, dim) and result.eigenvalues.shape == (dim,)
    assert result.num_params == models.count_params(params) and result.input_dim == dim
    assert np.all(np.diff(result.eigenvalues) <= 0)
    np.testing.assert_allclose(result.nads @ result.nads.T, np.eye(dim), atol=1e-10)
    assert result.residuals.max() <= 1e-12 * result.eigenvalues[0]
    # Sign convention: the largest-|entry| component of every NAD is positive.
    idx = np.argmax(np.abs(result.nads), axis=1)
    assert np.all(result.nads[np.arange(dim), idx] > 0)
    summary = nads.nad_summary(result)
    assert summary["input_dim"] == dim and summary["method"] == "dense"
    again = nads.compute_nads(f, params, points)  # deterministic, bit for bit
    np.testing.assert_array_equal(again.nads, result.nads)
    np.testing.assert_array_equal(again.eigenvalues, result.eigenvalues)


def test_nads_from_gram_known_spectrum():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    values = np.array([5.0, 3.0, 2.0, 1e-3, 0.0, 0.0])
    gram = (q * values) @ q.T
    vecs, got, residuals, num_zero = nads.nads_from_gram(gram)
    np.testing.assert_allclose(got, values, atol=1e-12)
    for i in range(4):  # the non-degenerate ones, up to the sign convention
        assert abs(abs(np.dot(vecs[i], q[:, i])) - 1.0) < 1e-10
    assert residuals.max() < 1e-12
    assert num_zero == 2


def test_nads_use_the_spectrum_sign_convention():
    # One sign convention for NTK eigenvectors and NADs (core.spectrum.apply_sign_convention:
    # largest-|entry| component positive; its tie rule is tested in test_spectrum.py).
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    gram = (q * np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])) @ q.T
    vecs, _, _, _ = nads.nads_from_gram(gram)
    np.testing.assert_array_equal(vecs, spectrum.apply_sign_convention(vecs))
    idx = np.argmax(np.abs(vecs), axis=1)
    assert np.all(vecs[np.arange(6), idx] > 0)
    # Control: the other sign of the same vectors is not a fixed point of the convention.
    assert not np.array_equal(-vecs, spectrum.apply_sign_convention(-vecs))
    assert not hasattr(nads, "sign_convention")  # no second copy


def test_relu_at_zero_is_refused_up_front_and_numerically():
    with pytest.raises(ValueError, match="identically zero.*gelu.*sigma > 0"):
        nads.check_nad_activation("ReLU", 0.0)
    nads.check_nad_activation("relu", 0.1)
    nads.check_nad_activation("gelu", 0.0)
    module, params, state = _setup({**TINY_MLP, "activation": "relu"})
    f = models.scalar_apply(module, state)
    points = nads.nad_points(SHAPE, 0.0, 1, jax.random.key(0))
    with pytest.raises(ValueError, match="AᵀA == 0"):
        nads.compute_nads(f, params, points)


def test_bad_gram_inputs():
    with pytest.raises(ValueError, match="square"):
        nads.nads_from_gram(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        nads.nads_from_gram(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_points_determinism_and_errors():
    p1 = nads.nad_points(SHAPE, 0.3, 2, jax.random.key(5))
    p2 = nads.nad_points(SHAPE, 0.3, 2, jax.random.key(5))
    np.testing.assert_array_equal(p1, p2)
    assert p1.shape == (2, *SHAPE)
    assert nads.nad_points(SHAPE, 0.0, 7, jax.random.key(5)).shape == (1, *SHAPE)
    assert not np.allclose(p1, nads.nad_points(SHAPE, 0.3, 2, jax.random.key(6)))
    with pytest.raises(ValueError, match="sigma"):
        nads.nad_points(SHAPE, -1.0, 1, jax.random.key(0))
    with pytest.raises(ValueError, match="num_points"):
        nads.nad_points(SHAPE, 1.0, 0, jax.random.key(0))
    with pytest.raises(ValueError, match="\\(H, W, C\\)"):
        nads.nad_points((4, 4), 1.0, 1, jax.random.key(0))


def _dataset(direction, label_idx=0, seed=42, **kwargs):
    _, noise_key, label_key = nads.nad_task_keys(seed, label_idx)
    settings = {"epsilon": 1.0, "sigma": 1.0, "num_train": 300, "num_test": 200} | kwargs
    return nads.nad_separable_dataset(
        direction, noise_key=noise_key, label_key=label_key, **settings
    )


def test_separable_dataset_margin_and_orthogonality():
    rng = np.random.default_rng(0)
    shape = (8, 8, 1)
    u = rng.standard_normal(shape)
    u /= np.linalg.norm(u)
    eps = 0.8
    data = _dataset(3.0 * u, epsilon=eps)  # unnormalised input is renormalised
    assert data["train_x"].shape == (300, *shape) and data["test_x"].shape == (200, *shape)
    assert data["train_x"].dtype == np.float32
    x = np.concatenate([data["train_x"], data["test_x"]]).reshape(500, -1).astype(np.float64)
    ell = np.concatenate([data["train_y"], data["test_y"]]).astype(np.float64)
    assert set(np.unique(ell)) == {0.0, 1.0}
    assert 0.35 < ell.mean() < 0.65
    y = 2 * ell - 1
    uf = u.reshape(-1)
    residual = x - (eps / 2) * y[:, None] * uf[None, :]
    np.testing.assert_allclose(residual @ uf, 0.0, atol=1e-5)
    proj = x @ uf
    margin = proj[y > 0].min() - proj[y < 0].max()
    np.testing.assert_allclose(margin, eps, atol=1e-5)
    # The noise in u^⊥ has std σ per direction: ‖w‖² ≈ σ²(D − 1).
    np.testing.assert_allclose(np.mean(np.sum(residual**2, axis=1)), 63.0, rtol=0.05)


def test_separable_dataset_keys_and_errors():
    u = np.zeros(16)
    u[3] = 1.0
    a = _dataset(u, input_shape=SHAPE)
    b = _dataset(u, input_shape=SHAPE)
    c = _dataset(u, input_shape=SHAPE, label_idx=1)
    np.testing.assert_array_equal(a["train_x"], b["train_x"])
    assert not np.allclose(a["train_x"], c["train_x"])
    with pytest.raises(ValueError, match="another input shape"):
        _dataset(u, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="zero"):
        _dataset(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="epsilon"):
        _dataset(u.reshape(SHAPE), epsilon=0.0)
    with pytest.raises(ValueError, match="num_train"):
        _dataset(u.reshape(SHAPE), num_train=0)
    with pytest.raises(ValueError, match="\\(H, W, C\\)"):
        _dataset(u)


def test_images_and_fourier():
    vecs = np.arange(32.0).reshape(2, 16)
    imgs = nads.nads_as_images(vecs, SHAPE)
    assert imgs.shape == (2, *SHAPE)
    np.testing.assert_array_equal(imgs[1, 0, 1, 0], 17.0)  # H-W-C order
    with pytest.raises(ValueError, match="cannot be reshaped"):
        nads.nads_as_images(vecs, (3, 3, 1))
    mags = nads.fourier_magnitudes(np.ones((1, 4, 4, 1)))
    expected = np.zeros((4, 4))
    expected[2, 2] = 16.0  # zero frequency shifted to the centre
    np.testing.assert_allclose(mags[0, :, :, 0], expected, atol=1e-12)
