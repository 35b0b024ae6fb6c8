"""Content fingerprints that identify a computation (used to resume it safely)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np


def fingerprint(*trees: Any, **settings: Any) -> str:
    """A short SHA-256 digest of array pytrees and JSON-serialisable settings.

    Two calls give the same digest exactly when every leaf has the same dtype, shape
    and bytes, and the settings are equal.

    Args:
        *trees: pytrees of arrays (e.g. the inputs (N, H, W, C) and θ0).
        **settings: anything else the result depends on (block size, dtype, method).

    Returns:
        24 hexadecimal characters.
    """
    digest = hashlib.sha256()
    for tree in trees:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        digest.update(str(treedef).encode())
        for leaf in leaves:
            arr = np.ascontiguousarray(np.asarray(leaf))
            digest.update(f"{arr.dtype.str}{arr.shape}".encode())
            digest.update(arr.tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]
