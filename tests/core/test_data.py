"""core.data: scaling, normalisation against float64 references, subsets, CIFAR-2 labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linearized_kedro.core.data import (
    binary_labels,
    channel_stats,
    normalize_images,
    pixel_channel_stats,
    prepare_dataset,
    resolve_subset_size,
    scale_pixels,
    stratified_subset,
)


def _images(n, shape=(4, 5, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_scale_pixels():
    x = np.array([0, 128, 255], np.uint8).reshape(1, 3, 1, 1)
    out = scale_pixels(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 128 / 255, 1.0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(scale_pixels(np.array([16], np.uint8), 16), [1.0])
    with pytest.raises(ValueError, match="positive"):
        scale_pixels(x, 0)


def test_channel_stats_match_float64_reference():
    x = _images(50).astype(np.float32) / 255
    mean, std = channel_stats(x)
    ref = x.astype(np.float64).transpose(3, 0, 1, 2).reshape(3, -1)
    np.testing.assert_allclose(mean, ref.mean(axis=1), rtol=1e-12)
    # Population std (ddof = 0), docs/methods.md §1.1: sqrt(mean((x - mean)^2)).
    np.testing.assert_allclose(
        std, np.sqrt(((ref - ref.mean(1, keepdims=True)) ** 2).mean(1)), rtol=1e-12
    )
    with pytest.raises(ValueError, match="constant"):
        channel_stats(np.ones((3, 2, 2, 1)))


def _assert_fsum_exact(x, mean, std, rtol):
    """mean and population std of each channel of x within rtol of math.fsum's."""
    for c in range(x.shape[-1]):
        values = x[..., c].astype(np.float64).ravel()
        m = math.fsum(values) / values.size
        s = math.sqrt(math.fsum((values - m) ** 2) / values.size)
        assert abs(mean[c] - m) <= rtol * abs(m) and abs(std[c] - s) <= rtol * s


def test_channel_stats_are_exact_over_many_chunks():
    # 150 images of 32x32 = 4.7 chunks of rows; references by math.fsum (exactly rounded).
    x = np.random.default_rng(3).integers(0, 256, (150, 32, 32, 3)).astype(np.float32) / 255
    mean, std = channel_stats(x)
    _assert_fsum_exact(x, mean, std, 1e-14)
    # Negative control: accumulating in float32 misses these tolerances.
    mean32 = x.reshape(-1, 3).mean(axis=0, dtype=np.float32)
    assert np.max(np.abs(mean32 - mean) / mean) > 1e-14


def test_pixel_channel_stats_are_exact_from_the_histogram():
    px = np.random.default_rng(3).integers(0, 256, (150, 32, 32, 3), dtype=np.uint8)
    x = scale_pixels(px)
    mean, std = pixel_channel_stats(px)
    _assert_fsum_exact(x, mean, std, 1e-15)
    # channel_stats is within ~1e-14 of fsum (above), so the two agree to a few 1e-14.
    np.testing.assert_allclose(
        np.concatenate(channel_stats(x)), np.concatenate((mean, std)), rtol=5e-14
    )
    # max_value (digits: 0..16) enters through the float32 pixel values.
    small = (px % 17).astype(np.uint8)
    np.testing.assert_allclose(
        np.concatenate(pixel_channel_stats(small, 16)),
        np.concatenate(channel_stats(scale_pixels(small, 16))),
        rtol=1e-13,
    )
    # Negative control: another image's histogram gives other statistics.
    assert not np.allclose(pixel_channel_stats(px[:75])[1], std, rtol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        pixel_channel_stats(x)
    with pytest.raises(ValueError, match="constant"):
        pixel_channel_stats(np.zeros((2, 2, 2, 1), np.uint8))


def test_normalize_images():
    x = _images(10).astype(np.float32)
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 8.0])
    out = normalize_images(x, mean, std)
    np.testing.assert_allclose(out, (x.astype(np.float64) - mean) / std, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"must both be \(3,\)"):
        normalize_images(x, mean[:2], std[:2])


@pytest.mark.parametrize(
    ("requested", "default", "expected"),
    [(None, 20, 20), (None, -1, 100), (-1, 20, 100), (7, 20, 7), (100, 5, 100)],
)
def test_resolve_subset_size(requested, default, expected):
    assert resolve_subset_size(requested, default, 100, "train") == expected


def test_resolve_subset_size_errors():
    with pytest.raises(
        ValueError, match="larger than the 100 train samples available; use at most 100"
    ):
        resolve_subset_size(101, 5, 100, "train")
    with pytest.raises(ValueError, match="positive count"):
        resolve_subset_size(0, 5, 100, "test")
    with pytest.raises(ValueError, match="integer"):
        resolve_subset_size(2.5, 5, 100, "test")


def test_stratified_subset_is_sorted_stratified_and_seeded():
    labels = np.repeat(np.arange(10), [30, 30, 30, 30, 30, 20, 20, 20, 20, 20])
    labels = np.random.default_rng(1).permutation(labels)
    idx = stratified_subset(labels, 50, seed=1041)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0) and idx.size == 50
    counts = np.bincount(labels[idx], minlength=10)
    np.testing.assert_array_equal(counts, [6] * 5 + [4] * 5)  # proportional to 30:20
    np.testing.assert_array_equal(idx, stratified_subset(labels, 50, seed=1041))
    assert not np.array_equal(idx, stratified_subset(labels, 50, seed=1))
    np.testing.assert_array_equal(stratified_subset(labels, 250, 0), np.arange(250))
    with pytest.raises(ValueError, match="at least 10 samples"):
        stratified_subset(labels, 5, 0)


def test_stratified_subset_equals_sklearn_call():
    from sklearn.model_selection import train_test_split

    labels = np.arange(200) % 10
    ref, _ = train_test_split(np.arange(200), train_size=60, stratify=labels, random_state=1041)
    np.testing.assert_array_equal(stratified_subset(labels, 60, 1041), np.sort(ref))


def test_binary_labels():
    np.testing.assert_array_equal(binary_labels(np.arange(10)), [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert binary_labels(np.array([3])).dtype == np.int64
    with pytest.raises(ValueError, match="0..9"):
        binary_labels(np.array([10]))


@pytest.mark.parametrize(
    ("num_classes", "expected"),
    [(2, [1, 0]), (3, [1, 0, 0]), (4, [1, 1, 0, 0]), (7, [1, 1, 1, 0, 0, 0, 0])],
)
def test_binary_labels_first_half_of_any_class_count(num_classes, expected):
    np.testing.assert_array_equal(binary_labels(np.arange(num_classes), num_classes), expected)


def test_binary_labels_class_count_is_checked():
    # 12 classes: 0-5 vs 6-11. The 10-class default refuses labels 10 and 11 instead of
    # silently splitting at 5.
    labels = np.arange(12)
    np.testing.assert_array_equal(binary_labels(labels, 12), [1] * 6 + [0] * 6)
    with pytest.raises(ValueError, match="pass the dataset's num_classes"):
        binary_labels(labels)
    with pytest.raises(ValueError, match="at least 2 classes"):
        binary_labels(np.zeros(3, np.int64), 1)
    with pytest.raises(ValueError, match="must be an integer"):
        binary_labels(labels, 12.0)


def test_prepare_dataset_float64_reference():
    xtr, xte = _images(40, seed=1), _images(20, seed=2)
    ytr, yte = np.arange(40) % 10, np.arange(20) % 10
    out = prepare_dataset(xtr, ytr, xte, yte, 20, 10, subset_seed=3)
    assert out.inputs.shape == (30, 4, 5, 3) and out.inputs.dtype == np.float32
    tr_idx, te_idx = out.sample_index[:20], out.sample_index[20:] - 40
    assert np.all(np.diff(tr_idx) > 0) and np.all(np.diff(te_idx) > 0)
    np.testing.assert_array_equal(out.labels, np.concatenate([ytr[tr_idx], yte[te_idx]]))
    # Independent float64 reference: statistics of the chosen training images only.
    ref_tr = xtr[tr_idx].astype(np.float64) / 255
    mean = ref_tr.mean(axis=(0, 1, 2))
    std = ref_tr.std(axis=(0, 1, 2))
    ref = (np.concatenate([ref_tr, xte[te_idx] / 255.0]) - mean) / std
    np.testing.assert_allclose(out.inputs, ref, rtol=1e-5, atol=1e-5)
    # The statistics are of the float32-scaled pixels: float32 rounding, ~1e-8 relative.
    np.testing.assert_allclose(out.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(
        out.inputs[:20].astype(np.float64).mean(axis=(0, 1, 2)), 0, atol=1e-5
    )
    np.testing.assert_allclose(out.inputs[:20].astype(np.float64).std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_prepare_dataset_in_place_equals_the_public_steps_bitwise(monkeypatch):
    """prepare_dataset scales and normalises in place, in one (populated) array; its bytes
    equal scale_pixels -> channel_stats -> normalize_images -> concatenate."""
    from linearized_kedro.core import memory

    monkeypatch.setattr(memory, "_POPULATE_MIN_BYTES", 0)  # take the mapped path here too
    xtr, xte = _images(70, seed=4), _images(30, seed=5)
    ytr, yte = np.arange(70) % 10, np.arange(30) % 10
    out = prepare_dataset(xtr, ytr, xte, yte, 50, 20, subset_seed=1)
    tr_idx, te_idx = out.sample_index[:50], out.sample_index[50:] - 70
    x_train, x_test = scale_pixels(xtr[tr_idx]), scale_pixels(xte[te_idx])
    mean, std = channel_stats(x_train)
    steps = np.concatenate(
        [normalize_images(x_train, mean, std), normalize_images(x_test, mean, std)]
    )
    assert out.inputs.dtype == steps.dtype == np.float32
    assert out.inputs.tobytes() == steps.tobytes()
    np.testing.assert_allclose(out.mean, mean, rtol=5e-14)  # histogram vs float64 sums
    np.testing.assert_allclose(out.std, std, rtol=5e-14)
    # Chunks of the lookup path (here 2 images each) change nothing.
    from linearized_kedro.core import data

    monkeypatch.setattr(data, "_TABLE_CHUNK_VALUES", 120)
    chunked = prepare_dataset(xtr, ytr, xte, yte, 50, 20, subset_seed=1)
    assert chunked.inputs.tobytes() == steps.tobytes()
    np.testing.assert_array_equal(chunked.std, out.std)
    # Float pixels take the arithmetic path; same bytes.
    as_float = prepare_dataset(
        xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, 50, 20, subset_seed=1
    )
    assert as_float.inputs.tobytes() == steps.tobytes()
    # Negative control: the same formula evaluated in float64, then rounded, differs.
    f64 = ((np.concatenate([xtr[tr_idx], xte[te_idx]]) / 255.0) - mean) / std
    assert out.inputs.tobytes() != f64.astype(np.float32).tobytes()


def test_prepare_dataset_without_normalisation_and_shape_check():
    x, y = _images(20), np.arange(20) % 10
    out = prepare_dataset(x, y, x, y, 20, 20, 0, normalize=False, max_value=255)
    np.testing.assert_allclose(out.inputs[:20], x / 255.0, atol=1e-7)
    np.testing.assert_array_equal(out.sample_index, np.arange(40))
    with pytest.raises(ValueError, match="differ in shape"):
        prepare_dataset(x, y, _images(20, (4, 4, 3)), y, 20, 20, 0)
