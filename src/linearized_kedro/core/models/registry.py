"""Models by name: one config class and one builder per architecture (docs/methods.md §1.2).

An architecture is registered once, in its own module::

    @dataclass(frozen=True)
    class MLPConfig(ModelConfig):
        name: str = "mlp"
        features: tuple[int, ...] = (100, 100)

    register_model("mlp", MLPConfig, lambda c: MLP(c.features, c.activation))

after which ``model_config({"name": "mlp", ...})`` (or ``ModelConfig(**mapping)``, which is
what Kedro calls for a ``params:`` input annotated ``ModelConfig``) returns an
``MLPConfig`` and ``build_model`` its Flax module. Nothing else names the architectures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import Config, ConfigError, from_mapping

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # tanh approximation, Flax's default (docs/methods.md §1.2)
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
}


def dense_head(x: jax.Array, features: Sequence[int], act: Callable) -> jax.Array:
    """Flatten (H-W-C order) → [Dense → act]* → Dense(1): (B, ...) -> (B, 1).

    Call it inside a module's ``nn.compact`` method: the Dense layers belong to that
    module (``Dense_0``, ``Dense_1``, ... after its other layers).
    """
    x = x.reshape((x.shape[0], -1))
    for width in features:
        x = act(nn.Dense(width)(x))
    return nn.Dense(1)(x)


@dataclass(frozen=True)
class _Entry:
    config_cls: type[ModelConfig]
    build: Callable[[Any], nn.Module]


_REGISTRY: dict[str, _Entry] = {}


class _DispatchByName(type):
    """``ModelConfig(**mapping)`` builds the registered config class of ``mapping['name']``.

    Kedro instantiates a dataclass-typed ``params:`` input as ``cls(**mapping)``; with this
    metaclass a node can annotate its model parameter with the base class and still get
    the architecture's own config (and its validation) before the run.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is ModelConfig:
            name = kwargs.get("name", args[0] if args else None)
            target = _entry(name).config_cls
            if args:
                return target(*args, **kwargs)
            return from_mapping(target, kwargs)
        return super().__call__(*args, **kwargs)


@dataclass(frozen=True)
class ModelConfig(Config, metaclass=_DispatchByName):
    """Base of every architecture's config: the fields all models share.

    ``ModelConfig(**mapping)`` and ``ModelConfig.from_dict(mapping)`` return the config
    class registered for ``mapping['name']``.

    Attributes:
        name: a registered model name (``MODEL_NAMES``).
        activation: one of ``ACTIVATIONS`` (case-insensitive).
        input_shape: optional (H, W, C) the preset is restricted to (e.g. NAD images).
    """

    SECTION: ClassVar[str] = "model_config"

    name: str
    activation: str = "relu"
    input_shape: tuple[int, ...] | None = None

    def validate(self) -> None:
        registered = registered_name(type(self))
        if registered is not None and self.name != registered:
            raise ConfigError(
                f"{self.SECTION}.name is {self.name!r} but {type(self).__name__} is the config "
                f"of model {registered!r}. Use model_config({{'name': {self.name!r}, ...}})."
            )
        act = self.activation.lower()
        if act not in ACTIVATIONS:
            raise ConfigError(
                f"Unknown activation {self.activation!r} for model {self.name!r} "
                f"({self.SECTION}.activation). Valid activations: {', '.join(ACTIVATIONS)}."
            )
        object.__setattr__(self, "activation", act)
        if self.input_shape is not None and (
            len(self.input_shape) != 3 or min(self.input_shape) < 1
        ):
            raise ConfigError(
                f"{self.SECTION}.input_shape must be [H, W, C] with positive sizes; "
                f"got {list(self.input_shape)}."
            )

    @classmethod
    def from_dict(cls, config: Any) -> ModelConfig:
        """The registered config of ``config['name']`` (kept for the first wave's callers)."""
        return model_config(config)

    def check_input_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Validates an (H, W, C) input shape for this preset; returns it as a tuple.

        Architectures with further constraints (LeNet's pooling) extend this.
        """
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Model {self.name!r} takes images of shape (H, W, C); got {shape}.")
        if self.input_shape is not None and shape != tuple(self.input_shape):
            raise ValueError(
                f"Model preset {self.name!r} is configured for inputs of shape "
                f"{tuple(self.input_shape)} but the data has shape {shape}. Use a dataset of "
                "that shape or change the preset's 'input_shape'."
            )
        return shape  # type: ignore[return-value]


def register_model(
    name: str, config_cls: type[ModelConfig], build: Callable[[Any], nn.Module]
) -> None:
    """Makes an architecture available by name.

    Args:
        name: the value of ``name`` in its parameters (``models.<name>.name``).
        config_cls: a frozen dataclass deriving :class:`ModelConfig` whose ``name``
            defaults to ``name``.
        build: ``build(config) -> flax module`` with ``apply(variables, x (B, H, W, C),
            train=False) -> (B, 1)``. Modules with convolutions should take a
            ``conv_autodiff`` attribute and pass it to ``layers.Conv`` (the training
            engine sets it).
    """
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise TypeError(f"config_cls of model {name!r} must derive ModelConfig; got {config_cls}.")
    if name in _REGISTRY and _REGISTRY[name].config_cls is not config_cls:
        raise ValueError(
            f"Model {name!r} is already registered with {_REGISTRY[name].config_cls.__name__}."
        )
    _REGISTRY[name] = _Entry(config_cls, build)


def unregister_model(name: str) -> None:
    """Removes a registered model (for tests and plugins that register temporary ones)."""
    _REGISTRY.pop(name, None)


def model_names() -> tuple[str, ...]:
    """The registered model names, in registration order."""
    return tuple(_REGISTRY)


def registered_name(config_cls: type) -> str | None:
    """The name ``config_cls`` is registered under, or None."""
    for name, entry in _REGISTRY.items():
        if entry.config_cls is config_cls:
            return name
    return None


def _entry(name: Any) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(
            f"Unknown model {name!r} (model_config.name). Valid models: {', '.join(_REGISTRY)}."
        )
    return _REGISTRY[name]


def model_config(value: ModelConfig | Mapping[str, Any] | str) -> ModelConfig:
    """The typed config of a model from a mapping (``{'name': 'lenet', ...}``) or a name.

    Unknown names list the registered ones; unknown keys name the key and the valid ones.
    """
    if isinstance(value, ModelConfig):
        return value
    if isinstance(value, str):
        return from_mapping(_entry(value).config_cls, {"name": value})
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError(
            "A model config must be a mapping with a 'name' key, e.g. "
            f"{{'name': 'lenet', 'activation': 'relu'}}; got {value!r}. "
            f"Valid models: {', '.join(_REGISTRY)}."
        )
    return from_mapping(_entry(value["name"]).config_cls, value)


def build_model(config: ModelConfig | Mapping[str, Any] | str) -> nn.Module:
    """The Flax module of a model config.

    Args:
        config: a ``ModelConfig``, its dict form (``{'name': 'lenet', ...}``) or a name.

    Returns:
        A module with ``apply(variables, x (B, H, W, C), train=False) -> (B, 1)``.
    """
    cfg = model_config(config)
    return _entry(cfg.name).build(cfg)
