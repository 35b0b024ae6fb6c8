"""core.memory.mapped_empty: a populated mapping for large arrays, np.empty for small ones."""

from __future__ import annotations

import mmap
import pickle

import numpy as np
import pytest

from linearized_kedro.core import memory


@pytest.mark.skipif(not hasattr(mmap, "MAP_POPULATE"), reason="Linux-only mapping flag")
def test_large_arrays_are_mapped_and_behave_like_np_empty(monkeypatch):
    monkeypatch.setattr(memory, "_POPULATE_MIN_BYTES", 1 << 20)
    a = memory.mapped_empty((600, 700), np.float64)  # 3.4 MB: mapped
    assert a.shape == (600, 700) and a.dtype == np.float64
    assert a.flags.c_contiguous and a.flags.writeable and not a.flags.owndata
    assert isinstance(a.base.base.obj, mmap.mmap)  # array <- memoryview <- the mapping
    assert not a.any()  # a fresh anonymous mapping is zeroed
    a[:] = np.arange(a.size, dtype=np.float64).reshape(a.shape)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)), a)
    np.testing.assert_array_equal(a.T.copy().T, a)
    # Control: a small array is a plain np.empty that owns its memory.
    b = memory.mapped_empty((10, 10), np.float32)
    assert b.flags.owndata and b.dtype == np.float32 and b.shape == (10, 10)
