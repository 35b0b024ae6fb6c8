"""θ0 and the network as a function of θ, for any registered model (docs/methods.md §1.3, §1.7).

Every module has the call signature ``module.apply(variables, x, train=False) -> (B, 1)``
with ``x`` of shape (B, H, W, C). ``train`` only matters for BatchNorm; all functions of θ
used for kernels, linearisations, NADs and evaluation run it with ``train=False``
(docs/methods.md §1.3), which makes samples independent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def init_variables(
    module: nn.Module, key: jax.Array | int, input_shape: Sequence[int]
) -> dict[str, Any]:
    """θ0 (and BN state) from an integer seed or a key, on a zero input (docs/methods.md §1.7).

    Args:
        module: a module from ``build_model``.
        key: a PRNG key or an integer seed (``jax.random.key(seed)``).
        input_shape: (H, W, C).

    Returns:
        ``{'params': ..., ['batch_stats': ...]}`` as plain dicts.
    """
    if isinstance(key, int | np.integer):
        key = jax.random.key(int(key))
    x = jnp.zeros((1, *tuple(input_shape)), jnp.float32)
    # Compiled: Flax's eager initialisers dispatch hundreds of tiny ops (seconds on a CPU).
    variables = jax.jit(partial(module.init, train=False))(key, x)
    return jax.tree_util.tree_map(lambda a: a, dict(variables))


def split_variables(variables: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Splits variables into (trainable params, non-trainable state such as BN stats)."""
    state = {k: v for k, v in variables.items() if k != "params"}
    return variables["params"], state


def scalar_apply(module: nn.Module, state: Mapping[str, Any]) -> Callable:
    """f(θ, x) -> (B,) logits with BN in inference mode: the "function of θ" (docs/methods.md §1.3).

    Args:
        module: a module from ``build_model``.
        state: the non-trainable collections (``{}`` or ``{'batch_stats': ...}``).
    """

    def f(params: Any, x: jax.Array) -> jax.Array:
        return module.apply({"params": params, **state}, x, train=False)[:, 0]

    return f


def count_params(params: Any) -> int:
    """Number of scalar entries of a parameter pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
