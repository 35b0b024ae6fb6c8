"""Configuration resolves as documented: presets, --params overrides, --env paper."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from linearized_kedro.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def load(env=None, runtime_params=None):
    loader = OmegaConfigLoader(
        str(CONF), env=env, runtime_params=runtime_params or {}, **CONFIG_LOADER_ARGS
    )
    return loader, loader["parameters"]


def test_base_defaults():
    _, params = load()
    assert params["model"] == "lenet"
    assert params["model_config"]["name"] == "lenet"
    assert params["data"]["dataset"] == "cifar10"
    assert isinstance(params["seed"], int)


def test_model_selects_whole_preset_and_single_field_override():
    _, params = load(runtime_params={"model": "mlp"})
    assert params["model_config"] == params["models"]["mlp"]
    _, params = load(runtime_params={"model": "lenet", "models": {"lenet": {"activation": "gelu"}}})
    assert params["model_config"]["name"] == "lenet"
    assert params["model_config"]["activation"] == "gelu"
    assert params["model_config"]["conv_features"] == [6, 16]


def _path(loader, name: str) -> str:
    """The file path the catalog (factories resolved) gives the dataset ``name``."""
    from kedro.io import DataCatalog

    return str(DataCatalog.from_config(loader["catalog"]).get(name)._filepath)


def test_catalog_paths_follow_runtime_params():
    loader, _ = load(runtime_params={"model": "mlp", "data": {"dataset": "digits"}})
    assert _path(loader, "ntk_eigenvectors").endswith(
        "05_model_input/digits/mlp/ntk_eigenvectors.npy"
    )
    assert _path(loader, "nads_directions").endswith("05_model_input/nad/mlp/nads_directions.npy")
    assert _path(loader, "eigen_training_accuracy_plot").endswith(
        "08_reporting/digits/mlp/eigen_training_accuracy.png"
    )
    loader, _ = load()
    assert "/cifar10/lenet/" in _path(loader, "ntk_eigenvectors")


def test_unknown_model_lists_the_presets():
    with pytest.raises(Exception, match="Unknown model 'vgg'. Valid models: mlp, lenet, resnet18"):
        load(runtime_params={"model": "vgg"})


def test_paper_env_resolves_full_scale_without_dropping_base_keys():
    _, params = load(env="paper", runtime_params={"model": "lenet"})
    assert params["ntk"]["num_eigvecs"] == 1000
    assert params["data"]["num_train"] == -1 and params["data"]["num_test"] == -1
    assert params["eigen_training"]["train"]["epochs"] == 100
    # soft merge: keys only set in base survive
    assert params["ntk"]["accumulate_dtype"] == "float64"
    assert params["eigen_training"]["train"]["max_lr"] == 0.05
    assert params["data"]["dataset"] == "cifar10"


@pytest.mark.parametrize("env", [None, "paper"])
def test_every_catalog_entry_resolves(env):
    loader, _ = load(env=env, runtime_params={"model": "mlp"})
    for name, entry in loader["catalog"].items():
        if isinstance(entry, dict) and "filepath" in entry:
            assert "${" not in entry["filepath"], name
