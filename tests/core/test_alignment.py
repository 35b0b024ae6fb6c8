"""Kernel alignment (docs/methods.md §3.2 step 5) against the explicit float64 Gram of tests/reference.py,
and the rotation/growth controls of the trace-normalised quotients and concentration ratio."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import explicit_gram, rel_err, tolerance

from linearized_kedro.core import alignment
from linearized_kedro.core.alignment import (
    concentration_ratio,
    kernel_alignment,
    kernel_rotation,
    quotients_from_gram,
    rotation_run,
    split_quotients,
)
from linearized_kedro.core.models import build_model, init_variables

CONFIGS = {
    "mlp": {"name": "mlp", "features": (6, 5)},
    "lenet": {"name": "lenet", "conv_features": (2, 3), "dense_features": (4,)},
}
F64 = tolerance("float64")


def _x64_variables(module, shape, seed=0):
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, jnp.float64), init_variables(module, seed, shape)
    )


def _top(gram, k):
    lam, vecs = np.linalg.eigh(gram)
    return lam[::-1][:k], vecs[:, ::-1][:, :k].T


def test_quotients_match_explicit_gram():
    # LeNet: the convolutions' hand-written VJPs are on this path (the MLP is covered in
    # float32 by the kernel_rotation test below).
    module = build_model(CONFIGS["lenet"])
    rng = np.random.default_rng(0)
    n = 13
    train_idx = rng.permutation(n)[:9]
    test_idx = np.setdiff1d(np.arange(n), train_idx)
    with jax.enable_x64(True):
        variables = _x64_variables(module, (8, 8, 3))
        x = rng.normal(size=(n, 8, 8, 3))
        gram = explicit_gram(module, variables, x)
        lam, u = _top(gram, 5)
        # chunk 2 of 5 eigenvectors and batch 4 (remainders on both axes).
        out = kernel_alignment(module, variables, x, u, train_idx, test_idx, chunk=2, batch_size=4)
        q = split_quotients(module, variables, x, u, train_idx, test_idx, chunk=2, batch_size=4)
        # Away from θ0 and for non-eigenvectors, with overlapping index sets.
        moved = jax.tree_util.tree_map(lambda a: a * 1.2 + 0.01, variables)
        v = rng.normal(size=(3, n))
        out_end = kernel_alignment(
            module, moved, x, v, np.arange(n), test_idx, chunk=2, batch_size=4
        )
    gram_end = explicit_gram(module, moved, x)
    # At θ0 the whole-kernel quotient of an eigenvector is its eigenvalue.
    assert rel_err(out["all"], lam) < F64
    for part, idx in (("train", train_idx), ("test", test_idx)):
        sub = u[:, idx]
        block = gram[np.ix_(idx, idx)]
        expected = np.einsum("ki,ij,kj->k", sub, block, sub) / np.sum(sub**2, 1)
        assert rel_err(out[part], expected) < F64
        assert rel_err(out[f"trace_{part}"], np.trace(block)) < F64
        assert rel_err(q[part], expected / (np.trace(block) / idx.size)) < F64
        assert rel_err(out[f"{part}_split_normalized"], q[part]) < F64
        assert rel_err(q[part], quotients_from_gram(gram, u, idx)) < F64
    assert rel_err(out["trace"], np.trace(gram)) < F64
    assert rel_err(out["all_normalized"], lam / (np.trace(gram) / n)) < F64
    expected_end = np.einsum("ki,ij,kj->k", v, gram_end, v) / np.sum(v**2, 1)
    assert rel_err(out_end["all"], expected_end) < F64
    assert rel_err(out_end["train"], out_end["all"]) < F64
    # Control: the moved kernel is measurably different, so the comparisons above can fail.
    assert rel_err(np.einsum("ki,ij,kj->k", v, gram, v) / np.sum(v**2, 1), expected_end) > 1e-3


def test_float32_path_and_errors():
    module = build_model(CONFIGS["lenet"])
    variables = init_variables(module, 1, (8, 8, 3))
    x = np.random.default_rng(1).normal(size=(6, 8, 8, 3)).astype(np.float32)
    gram = explicit_gram(module, variables, x)
    lam, u = _top(gram, 2)
    out = kernel_alignment(module, variables, x, u, np.arange(4), np.arange(4, 6))
    # float32 Jacobian products, float64 accumulation of the norms: the float32 tolerance.
    assert rel_err(out["all"], lam) < 10 * tolerance("float32")
    with pytest.raises(ValueError, match="eigvecs"):
        kernel_alignment(module, variables, x, u[:, :5], np.arange(4), np.arange(4, 6))
    with pytest.raises(ValueError, match="test_idx"):
        kernel_alignment(module, variables, x, u, np.arange(4), np.array([9]))


def test_concentration_ratio_neighbours():
    q = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])
    # j = 7: neighbours 2..6 and 8..12, median 7.
    assert concentration_ratio(q, 7) == pytest.approx(1.0)
    # j = 2: neighbours 1, 3..7 (median 4.5); index 0, the one-sign top eigenvector, never counts.
    np.testing.assert_array_equal(alignment.neighbours(2, q.size), [1, 3, 4, 5, 6, 7])
    assert concentration_ratio(q, 2) == pytest.approx(2.0 / 4.5)
    # j = 12 (last): neighbours 7..11 only; radius 1: 11 only.
    assert concentration_ratio(q, 12) == pytest.approx(12.0 / 9.0)
    assert concentration_ratio(q, 12, radius=1) == pytest.approx(12.0 / 11.0)
    # One neighbour that also gained energy (a near-degenerate partner) barely moves the
    # median; control: the mean would collapse the ratio.
    partner = q.copy()
    partner[8] = 1000.0
    assert concentration_ratio(partner, 7) == pytest.approx(7.0 / 7.5)
    nb = alignment.neighbours(7, q.size)
    assert 7.0 / np.mean(partner[nb]) < 0.1 * concentration_ratio(partner, 7)
    assert np.isnan(concentration_ratio(np.array([5.0, 1.0]), 1))  # no neighbour at k = 2
    with pytest.raises(ValueError, match="outside the k=13"):
        concentration_ratio(q, 13)
    with pytest.raises(ValueError, match="radius"):
        concentration_ratio(q, 3, radius=0)


@pytest.fixture(scope="module")
def small_kernel():
    """A real NTK Gram (tiny MLP, 40 samples) with its top 20 eigenvectors; 30/10 split."""
    module = build_model({"name": "mlp", "features": (16, 16)})
    x = np.random.default_rng(3).normal(size=(40, 4, 4, 1))
    variables = init_variables(module, 0, (4, 4, 1))
    gram = explicit_gram(module, variables, x)
    lam, u = _top(gram, 20)
    return gram, lam, u, np.arange(30), np.arange(30, 40)


def _ratios(gram, u, train_idx, test_idx, j):
    return {
        split: concentration_ratio(quotients_from_gram(gram, u, idx), j)
        for split, idx in (("train", train_idx), ("test", test_idx))
    }


def test_pure_growth_leaves_trace_normalised_quotients_unchanged(small_kernel):
    gram, lam, u, train_idx, test_idx = small_kernel
    grown = 7.5 * gram
    for idx in (train_idx, test_idx):
        np.testing.assert_allclose(
            quotients_from_gram(grown, u, idx), quotients_from_gram(gram, u, idx), rtol=1e-12
        )
    # Control: without the trace normalisation growth shows up as a 7.5x change.
    sub = u[:, train_idx]
    raw = np.einsum("ki,ij,kj->k", sub, gram[np.ix_(train_idx, train_idx)], sub)
    raw_grown = np.einsum("ki,ij,kj->k", sub, grown[np.ix_(train_idx, train_idx)], sub)
    np.testing.assert_allclose(raw_grown / raw, 7.5, rtol=1e-12)
    # An isotropic term (growth that is not a scaling) does not concentrate on any index.
    j = 10
    iso = _ratios(gram + lam[j] * np.eye(gram.shape[0]), u, train_idx, test_idx, j)
    base = _ratios(gram, u, train_idx, test_idx, j)
    for split in base:
        assert iso[split] < base[split] * 1.2 + 0.2, (iso, base)


def test_rotation_toward_target_raises_the_ratio_at_the_target(small_kernel):
    gram, lam, u, train_idx, test_idx = small_kernel
    j = 10
    base = _ratios(gram, u, train_idx, test_idx, j)
    # Rotation toward u_j: add energy along u_j, of the size of the neighbouring eigenvalues.
    rotated = gram + 5 * lam[j] * np.outer(u[j], u[j])
    after = _ratios(rotated, u, train_idx, test_idx, j)
    for split in base:
        # Margin: 5λ_j added along u_j against neighbours with eigenvalues within a few λ_j.
        assert after[split] > base[split] + 1.0, (split, base, after)
    # Control: the same energy along a far eigenvector leaves the ratio at j nearly as is.
    far = gram + 5 * lam[j] * np.outer(u[19], u[19])
    moved = _ratios(far, u, train_idx, test_idx, j)
    for split in base:
        assert abs(moved[split] - base[split]) < 0.5, (split, base, moved)
    # Rotation on the train rows only: the train ratio rises, the test quotients are untouched.
    mask = np.zeros(gram.shape[0])
    mask[train_idx] = 1.0
    train_only = gram + 5 * lam[j] * np.outer(u[j] * mask, u[j] * mask)
    split_after = _ratios(train_only, u, train_idx, test_idx, j)
    assert split_after["train"] > base["train"] + 1.0
    np.testing.assert_allclose(
        quotients_from_gram(train_only, u, test_idx), quotients_from_gram(gram, u, test_idx)
    )


def test_kernel_rotation_contract_and_identity_at_theta0():
    module = build_model(CONFIGS["mlp"])
    rng = np.random.default_rng(4)
    n, k = 24, 12
    x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
    variables0 = init_variables(module, 0, (4, 4, 1))
    gram = explicit_gram(module, variables0, x)
    lam, u = _top(gram, k)
    train_idx, test_idx = np.arange(16), np.arange(16, n)
    moved = jax.tree_util.tree_map(lambda a: a * 1.3 + 0.05, variables0)
    report = kernel_rotation(
        module,
        variables0,
        {3: variables0, 7: moved},
        x,
        u,
        train_idx,
        test_idx,
        eigenvalues=lam,
        settings={"seed": 42},
        batch_size=8,
    )
    assert set(report) == {"eigenvalues", "runs", "settings"}
    assert set(report["runs"]) == {"3", "7"}
    assert report["settings"]["seed"] == 42 and report["settings"]["indices"] == [3, 7]
    assert report["settings"]["radius"] == alignment.DEFAULT_RADIUS
    keys = {"train_init", "train_end", "test_init", "test_end"}
    same, trained = report["runs"]["3"], report["runs"]["7"]
    assert set(same) == keys | {"concentration"} and set(same["concentration"]) == keys
    assert all(len(same[key]) == k for key in keys)
    # θ_end = θ0: end and init coincide exactly (same program, same inputs).
    for split in ("train", "test"):
        assert same[f"{split}_end"] == same[f"{split}_init"]
        assert same["concentration"][f"{split}_end"] == same["concentration"][f"{split}_init"]
    # Init quotients against the reference Gram (float32 network, float64 reference).
    for split, idx in (("train", train_idx), ("test", test_idx)):
        reference = quotients_from_gram(gram, u, idx)
        assert rel_err(same[f"{split}_init"], reference) < 10 * tolerance("float32")
        assert trained[f"{split}_init"] == same[f"{split}_init"]  # Θ_0 computed once
    # Control: a moved network gives another end kernel.
    assert rel_err(trained["train_end"], trained["train_init"]) > 1e-3
    # The run entry is the pure function of the two quotient sets.
    init = {s: np.asarray(same[f"{s}_init"]) for s in ("train", "test")}
    end = {s: np.asarray(trained[f"{s}_end"]) for s in ("train", "test")}
    assert rotation_run(init, end, 7) == trained
    with pytest.raises(ValueError, match="outside the k=12"):
        kernel_rotation(module, variables0, {12: moved}, x, u, train_idx, test_idx, eigenvalues=lam)
    with pytest.raises(ValueError, match="same spectrum"):
        kernel_rotation(
            module, variables0, {3: moved}, x, u, train_idx, test_idx, eigenvalues=lam[:5]
        )
