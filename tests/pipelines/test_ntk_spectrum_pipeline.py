"""ntk_spectrum on an in-memory catalog: results, resumption, failure modes."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.core.models import build_model, init_variables, scalar_apply, split_variables
from linearized_kedro.datasets.gram_blocks import GramBlockStoreDataset
from linearized_kedro.experiments.spectrum import SpectrumConfig
from linearized_kedro.figures import figure_has_data
from linearized_kedro.pipelines.ntk_spectrum import create_pipeline
from linearized_kedro.pipelines.ntk_spectrum.nodes import init_network, spectrum

MLP = {"name": "mlp", "activation": "relu", "features": [16, 8]}
N_TRAIN, N_TEST = 30, 10


def _data(shape=(6, 6, 1), seed=0):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (N_TRAIN + N_TEST, *shape)), np.float32)
    report = {
        "dataset": "synthetic",
        "num_train": N_TRAIN,
        "num_test": N_TEST,
        "input_shape": list(shape),
    }
    return x, report


def _explicit_gram(config, variables, x):
    """Float64 reference: explicit per-sample Jacobians, K = J Jᵀ."""
    module = build_model(config)
    params, state = split_variables(variables)
    f = scalar_apply(module, state)
    jac = jax.jacrev(lambda p: f(p, x))(params)
    flat = np.concatenate(
        [np.asarray(a, np.float64).reshape(x.shape[0], -1) for a in jax.tree_util.tree_leaves(jac)],
        axis=1,
    )
    return flat @ flat.T


def _ntk(**overrides):
    params = {"num_eigvecs": 5, "progress": False, "block_size": 16}
    params.update(overrides)
    return SpectrumConfig(**params)


class Kept(MemoryDataset):
    """A MemoryDataset the runner does not release, so the test can read outputs."""

    def _release(self) -> None:
        pass


OUTPUTS = (
    "ntk_eigenvalues",
    "ntk_eigenvectors",
    "ntk_report",
    "ntk_init_params",
    "ntk_sample_index",
    "ntk_spectrum_plot",
)


def _catalog(tmp_path, x, report, ntk):
    return DataCatalog(
        {
            **{name: Kept() for name in OUTPUTS},
            "prepared_inputs": MemoryDataset(x),
            "data_report": MemoryDataset(report),
            "prepared_sample_index": MemoryDataset(np.arange(x.shape[0])),
            "params:model_config": MemoryDataset(MLP),
            "params:ntk": MemoryDataset(ntk),
            "params:seed": MemoryDataset(42),
            "ntk_gram_tiles": GramBlockStoreDataset(str(tmp_path / "tiles")),
        }
    )


def test_pipeline_matches_float64_reference(tmp_path):
    x, report = _data()
    catalog = _catalog(tmp_path, x, report, _ntk())
    SequentialRunner().run(create_pipeline(), catalog)
    values = catalog.load("ntk_eigenvalues")
    vectors = catalog.load("ntk_eigenvectors")
    out = catalog.load("ntk_report")
    variables = catalog.load("ntk_init_params")
    gram = _explicit_gram(MLP, variables, x)
    ref_values, ref_vectors = np.linalg.eigh(gram)
    ref_values, ref_vectors = ref_values[::-1][:5], ref_vectors[:, ::-1][:, :5].T
    np.testing.assert_allclose(values, ref_values, rtol=1e-5)
    # Same eigenvectors up to sign; our sign: largest-|entry| positive.
    overlap = np.abs(np.sum(vectors * ref_vectors, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
    rows = np.arange(5)
    assert np.all(vectors[rows, np.argmax(np.abs(vectors), axis=1)] > 0)
    assert out["n"] == 40 and out["k"] == 5 and out["max_residual"] < 1e-5
    assert len(out["positive_fraction"]) == 5
    np.testing.assert_array_equal(catalog.load("ntk_sample_index"), np.arange(40))
    assert figure_has_data(catalog.load("ntk_spectrum_plot"))


def test_interrupted_gram_resumes_with_identical_result(tmp_path, monkeypatch):
    x, report = _data()
    variables = init_network(MLP, report, 42)
    tiles = GramBlockStoreDataset(str(tmp_path / "tiles")).load()
    full = spectrum(x, variables, MLP, report, _ntk(resume=False), 42, tiles)

    from linearized_kedro.datasets import gram_blocks

    calls = {"n": 0}
    original_put = gram_blocks.GramBlockStore.put

    def flaky_put(self, key, tile):
        original_put(self, key, tile)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill after two tiles")

    monkeypatch.setattr(gram_blocks.GramBlockStore, "put", flaky_put)
    # resume_after_s=0: tiles are written as they finish (not after 30 s of Gram).
    with pytest.raises(KeyboardInterrupt):
        spectrum(x, variables, MLP, report, _ntk(resume_after_s=0), 42, tiles)
    monkeypatch.setattr(gram_blocks.GramBlockStore, "put", original_put)
    stored = [p for p in (tmp_path / "tiles").rglob("tile_*.npy")]
    assert len(stored) == 2

    new_tiles = []
    monkeypatch.setattr(
        gram_blocks.GramBlockStore,
        "put",
        lambda self, key, tile: (new_tiles.append(key), original_put(self, key, tile)),
    )
    resumed = spectrum(x, variables, MLP, report, _ntk(resume_after_s=0), 42, tiles)
    # 40 samples in blocks of 16 → 3 row blocks → 6 upper-triangular tiles; 2 were done.
    assert len(new_tiles) == 4
    np.testing.assert_array_equal(resumed[0], full[0])
    np.testing.assert_array_equal(resumed[1], full[1])


def test_same_seed_same_arrays(tmp_path):
    x, report = _data()
    runs = []
    for i in range(2):
        catalog = _catalog(tmp_path / str(i), x, report, _ntk())
        SequentialRunner().run(create_pipeline(), catalog)
        runs.append((catalog.load("ntk_eigenvalues"), catalog.load("ntk_eigenvectors")))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_k_not_smaller_than_n_is_an_error(tmp_path):
    x, report = _data()
    variables = init_network(MLP, report, 42)
    tiles = GramBlockStoreDataset(str(tmp_path)).load()
    with pytest.raises(ValueError, match="must be smaller than the number of samples"):
        spectrum(x, variables, MLP, report, _ntk(num_eigvecs=40), 42, tiles)


def test_data_shape_mismatch_for_preset(tmp_path):
    x, report = _data()
    variables = init_network(MLP, report, 42)
    tiles = GramBlockStoreDataset(str(tmp_path)).load()
    other = np.zeros((40, 5, 5, 1), np.float32)
    with pytest.raises(ValueError, match="do not match the model preset"):
        spectrum(other, variables, MLP, report, _ntk(), 42, tiles)
    lenet_shape = {"name": "lenet", "input_shape": [32, 32, 1]}
    with pytest.raises(ValueError, match="configured for inputs of shape"):
        init_network(lenet_shape, report, 42)


def test_nan_inputs_are_refused(tmp_path):
    x, report = _data()
    variables = init_network(MLP, report, 42)
    x = x.copy()
    x[3, 0, 0, 0] = np.nan
    tiles = GramBlockStoreDataset(str(tmp_path)).load()
    with pytest.raises(ValueError, match="NaN or Inf"):
        spectrum(x, variables, MLP, report, _ntk(), 42, tiles)


def test_non_integer_seed_is_refused():
    _, report = _data()
    with pytest.raises(ValueError, match="must be an integer"):
        init_network(MLP, report, 4.2)


def test_resnet18_spectrum_runs_in_inference_mode(tmp_path):
    """docs/methods.md §4 item 1: the original crashes on ResNet18; ours runs (tiny N and width)."""
    config = {"name": "resnet18", "stage_sizes": [1], "num_filters": 4}
    x, report = _data(shape=(4, 4, 3))
    x, report = x[:12], {**report, "num_train": 8, "num_test": 4}
    variables = init_variables(build_model(config), 42, (4, 4, 3))
    variables = jax.tree_util.tree_map(np.asarray, variables)
    tiles = GramBlockStoreDataset(str(tmp_path)).load()
    values, vectors, out = spectrum(
        x, variables, config, report, _ntk(num_eigvecs=3, block_size=None), 42, tiles
    )
    gram = _explicit_gram(config, variables, x)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(gram)[::-1][:3], rtol=1e-4)


def test_nystrom_is_an_explicit_approximation(tmp_path):
    x, report = _data()
    variables = init_network(MLP, report, 42)
    tiles = GramBlockStoreDataset(str(tmp_path)).load()
    values, vectors, out = spectrum(
        x, variables, MLP, report, _ntk(nystrom_landmarks=36), 42, tiles
    )
    assert out["approximation"] == "nystrom" and out["plan"]["landmarks"] == 36
    assert out["gram_fingerprint"] is None
    exact = np.linalg.eigvalsh(_explicit_gram(MLP, variables, x))[::-1][:5]
    # 36 of 40 random landmarks: the leading eigenvalues are close, not exact.
    np.testing.assert_allclose(values[:2], exact[:2], rtol=0.1)
    assert vectors.shape == (5, 40)
    with pytest.raises(ValueError, match="exceeds ntk.nystrom_landmarks"):
        spectrum(x, variables, MLP, report, _ntk(nystrom_landmarks=3), 42, tiles)
