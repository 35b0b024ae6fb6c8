"""Empirical NTK Gram matrices at θ0, split by mechanism (docs/methods.md §1.4, §3.1).

* ``structure``: which layers get structured per-sample gradients (probing layer calls);
* ``features``: per-sample feature rows of a block of samples;
* ``zero_columns``: parameter leaves whose per-sample gradient is provably zero;
* ``plan``: block size, cached blocks, bytes and FLOPs;
* ``gram``: the tiled upper-triangle driver (``ntk_gram``, ``TiledGram``);
* ``device``: tile products and the Gram on the accelerator;
* ``products``: K·v and the rectangular kernel K_nm without the full Gram.

``from linearized_kedro.core import ntk; ntk.ntk_gram(...)`` is the usual entry point.
"""

from .device import PRECISIONS as DEVICE_PRECISIONS
from .features import Features, conv_rows_device, conv_rows_host, flat_jacobian
from .gram import TiledGram, host_array, ntk_gram
from .plan import (
    AUTO_FLOAT32_MAX_K,
    DEFAULT_MEMORY_BUDGET,
    HOST_PRECISIONS,
    PRODUCTS,
    gram_plan,
    resolve_host_precision,
)
from .products import ntk_cross_gram, ntk_vector_product
from .structure import METHODS, Site, Structure
from .zero_columns import ZeroColumns, find_zero_columns

# First-wave private names, kept for callers that imported them.
_Site = Site
_conv_rows_host = conv_rows_host

__all__ = [
    "AUTO_FLOAT32_MAX_K",
    "DEFAULT_MEMORY_BUDGET",
    "DEVICE_PRECISIONS",
    "HOST_PRECISIONS",
    "METHODS",
    "PRODUCTS",
    "Features",
    "Site",
    "Structure",
    "TiledGram",
    "ZeroColumns",
    "conv_rows_device",
    "conv_rows_host",
    "find_zero_columns",
    "flat_jacobian",
    "gram_plan",
    "host_array",
    "ntk_cross_gram",
    "ntk_gram",
    "ntk_vector_product",
    "resolve_host_precision",
]
