"""Host memory helpers for the large arrays of a run (the Gram, the prepared images)."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

# Arrays at least this large are mapped with their pages populated (``mapped_empty``).
_POPULATE_MIN_BYTES = 64 * 2**20


def mapped_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose pages are all mapped (zeroed) in one system call.

    For arrays that are written piece by piece right after (the host Gram, the prepared
    images). For a host Gram (512 MB at N = 8000): written tile by tile, a fresh ``np.empty`` takes
    its page faults during the assembly, and NumPy asks for transparent huge pages on
    large arrays, whose faults stall whenever the kernel must compact memory first. On
    the 2-core test VM, assembling N = 8000 from 1000-row tiles took 0.11–0.74 s
    (median 0.36 s) with ``np.empty`` against a steady 0.22 s here, each in a fresh
    process (``benchmarks/cpu_kernels.py --only populated_gram``); inside ``kedro run``
    the 36 tile writes took 0.75–0.79 s against 0.07 s plus ≈ 0.16 s of mapping. Smaller
    arrays (under 64 MB), and systems without ``MAP_POPULATE``, get ``np.empty``.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if nbytes < _POPULATE_MIN_BYTES or populate is None:
        return np.empty(shape, dtype)
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    except (OSError, ValueError):
        return np.empty(shape, dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
