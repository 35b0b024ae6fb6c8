"""The networks of the paper (docs/methods.md §1.2), looked up by name.

``build_model({'name': 'lenet', ...})`` builds any registered architecture;
``register_model(name, config_cls, build)`` adds one (see ``registry``). Each architecture
lives in its own module with its own config class (``mlp``, ``lenet``, ``resnet``).
"""

from __future__ import annotations

from typing import Any

from . import lenet, mlp, resnet  # noqa: F401  (registers the built-in architectures)
from .lenet import LeNet, LeNetConfig
from .mlp import MLP, MLPConfig
from .registry import (
    ACTIVATIONS,
    ModelConfig,
    build_model,
    model_config,
    model_names,
    register_model,
    registered_name,
    unregister_model,
)
from .resnet import ResNet18, ResNet18Config, ResNetBlock
from .variables import count_params, init_variables, scalar_apply, split_variables

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODEL_NAMES",
    "LeNet",
    "LeNetConfig",
    "MLPConfig",
    "ModelConfig",
    "ResNet18",
    "ResNet18Config",
    "ResNetBlock",
    "build_model",
    "count_params",
    "init_variables",
    "model_config",
    "model_names",
    "register_model",
    "registered_name",
    "scalar_apply",
    "split_variables",
    "unregister_model",
]


def __getattr__(name: str) -> Any:
    # MODEL_NAMES follows the registry, so models registered later are included.
    if name == "MODEL_NAMES":
        return model_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
