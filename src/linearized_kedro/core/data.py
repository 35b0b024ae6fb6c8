"""Pure data transforms: pixel scaling, normalisation, stratified subsets, two-class labels (docs/methods.md §1.1).

NumPy and scikit-learn only; no file I/O. The Kedro ``data`` pipeline and
notebooks call these on the arrays that ``datasets.raw`` reads. Nothing here assumes a
dataset: class counts and pixel ranges are arguments (the dataset's spec has them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .memory import mapped_empty

logger = logging.getLogger(__name__)


def scale_pixels(
    images: np.ndarray, max_value: float = 255.0, out: np.ndarray | None = None
) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1].

    Args:
        images: (N, H, W, C) integer pixels in 0..``max_value`` (255; 16 for digits).
        max_value: The largest possible pixel value.
        out: a float32 array of the same shape to write into (default: a new one).

    Returns:
        (N, H, W, C) float32 ``images / max_value`` (``out`` when given).
    """
    if max_value <= 0:
        raise ValueError(f"max_value must be positive, got {max_value}.")
    # One float32 division from the integers (cast exactly).
    return np.divide(images, np.float32(max_value), out=out, dtype=np.float32)


# Rows (pixels) per float64 chunk of ``channel_stats``: 32 CIFAR images, 768 KB per channel.
_STATS_CHUNK_ROWS = 1 << 15


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population standard deviation (ddof = 0) over N, H, W.

    Args:
        images: (N, H, W, C) training images (docs/methods.md §1.1: statistics of the training
            split only).

    Returns:
        ``mean`` (C,) and ``std`` (C,), float64 (accumulated in float64 so that 60 000
        images do not lose digits).

    Raises:
        ValueError: For an empty set or a channel with zero variance.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"Expected (N, H, W, C) images with N > 0, got shape {images.shape}.")
    flat = images.reshape(-1, images.shape[-1])
    n = flat.shape[0]
    # Two passes (the mean, then the squared deviations from it) over chunks of rows cast
    # to float64 one at a time: no float64 copy of the whole set (1.2 GB at 50 000 CIFAR
    # images), 0.16 s against 0.34-0.78 s for NumPy's mean/std of that copy at 6000
    # images (`benchmarks/cpu_kernels.py --only channel_stats`), and within ~1e-14 of
    # math.fsum (tests/core/test_data.py; the copy's std was ~4e-12 off at 6000 images).
    total = np.zeros(flat.shape[1])
    for start in range(0, n, _STATS_CHUNK_ROWS):
        total += flat[start : start + _STATS_CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros_like(total)
    for start in range(0, n, _STATS_CHUNK_ROWS):
        deviation = flat[start : start + _STATS_CHUNK_ROWS].astype(np.float64)
        deviation -= mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    std = np.sqrt(squares / n)
    _check_spread(std)
    return mean, std


def _check_spread(std: np.ndarray) -> None:
    """Raises for a channel of zero variance (it cannot be normalised)."""
    if np.any(std == 0):
        raise ValueError(
            f"Channel(s) {np.flatnonzero(std == 0).tolist()} are constant over the training "
            "images; they cannot be normalised. Use more training images or data.normalize=false."
        )


def normalize_images(
    images: np.ndarray, mean: np.ndarray, std: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """``(x − mean_c) / std_c`` per channel, in float32.

    Args:
        images: (N, H, W, C) float images.
        mean: (C,) channel means.
        std: (C,) channel standard deviations.
        out: a float32 array of the same shape to write into (may be ``images`` itself;
            default: a new one).

    Returns:
        (N, H, W, C) float32 (``out`` when given).
    """
    images = np.asarray(images, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if mean.shape != (images.shape[-1],) or std.shape != mean.shape:
        raise ValueError(
            f"mean {mean.shape} and std {std.shape} must both be ({images.shape[-1]},) for "
            f"images of shape {images.shape}."
        )
    out = np.subtract(images, mean.astype(np.float32), out=out)
    out /= std.astype(np.float32)
    return out


def resolve_subset_size(requested: int | None, default: int, available: int, split: str) -> int:
    """Turns ``data.num_train`` / ``data.num_test`` into a sample count.

    Args:
        requested: ``None`` → ``default``; ``-1`` → the whole split; else a count.
        default: The dataset's laptop-sized default (``data.subset_sizes``; may be -1).
        available: Number of samples in the split.
        split: ``"train"`` or ``"test"``, for messages.

    Raises:
        ValueError: For counts < 1 (other than -1) or larger than ``available``.
    """
    value = default if requested is None else requested
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"data.num_{split} must be an integer, -1 or null, got {value!r}.")
    value = int(value)
    if value == -1:
        return available
    if value < 1:
        raise ValueError(
            f"data.num_{split}={value} is invalid: use a positive count, -1 (all) or null."
        )
    if value > available:
        raise ValueError(
            f"data.num_{split}={value} is larger than the {available} {split} samples "
            f"available; use at most {available} (or -1 for all)."
        )
    return value


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-stratified random subset of size ``n``, in ascending order.

    docs/methods.md §1.1: ``train_test_split(train_size=n, stratify=labels, random_state=seed)``
    (seed = 1041 by default). ``n`` equal to the number of labels keeps every index.

    Args:
        labels: (N,) integer class labels.
        n: Subset size, 1 ≤ n ≤ N.
        seed: Integer ``random_state``.

    Returns:
        (n,) int64 indices into ``labels``, sorted.
    """
    labels = np.asarray(labels)
    total = labels.shape[0]
    if not 1 <= n <= total:
        raise ValueError(f"Subset size {n} must lie in 1..{total}.")
    if n == total:
        return np.arange(total, dtype=np.int64)
    from sklearn.model_selection import train_test_split

    num_classes = np.unique(labels).size
    if n < num_classes or total - n < num_classes:
        raise ValueError(
            f"A stratified subset of {n} out of {total} samples needs at least {num_classes} "
            f"samples on each side (one per class); choose {num_classes}..{total - num_classes} "
            f"or all ({total})."
        )
    chosen, _ = train_test_split(
        np.arange(total, dtype=np.int64), train_size=n, stratify=labels, random_state=int(seed)
    )
    return np.sort(chosen).astype(np.int64)


def binary_labels(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Two-class labels: 1 for the first half of the classes, 0 for the rest (docs/methods.md §1.1).

    CIFAR-2 is CIFAR-10's classes 0–4 (airplane … deer) against 5–9. The same rule for any
    dataset: label 1 for classes ``0 .. num_classes // 2 − 1``, label 0 for the others
    (with an odd count the second group is the larger one).

    Args:
        labels: (N,) integer class labels in ``0 .. num_classes − 1``.
        num_classes: the dataset's class count (``dataset_spec(name).num_classes``); the
            default is CIFAR-10's.

    Returns:
        (N,) int64 in {0, 1}.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be an integer; got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(f"A two-class split needs at least 2 classes; got {num_classes}.")
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"binary_labels expects {num_classes}-class labels in 0..{num_classes - 1}, got "
            f"{labels.min()}..{labels.max()}; pass the dataset's num_classes."
        )
    return (labels < num_classes // 2).astype(np.int64)


@dataclass(frozen=True)
class PreparedData:
    """Normalised NTK data set: train rows first, then test rows (docs/methods.md §1.1).

    Attributes:
        inputs: (N, H, W, C) float32, N = num_train + num_test.
        labels: (N,) int64 original class labels.
        sample_index: (N,) int64 position of each row in the official order (all
            train samples, then all test samples).
        num_train: Number of leading train rows.
        num_test: Number of trailing test rows.
        mean: (C,) normalisation means (zeros when not normalised).
        std: (C,) normalisation standard deviations (ones when not normalised).
    """

    inputs: np.ndarray
    labels: np.ndarray
    sample_index: np.ndarray
    num_train: int
    num_test: int
    mean: np.ndarray
    std: np.ndarray


def pixel_channel_stats(
    pixels: np.ndarray, max_value: float = 255.0
) -> tuple[np.ndarray, np.ndarray]:
    """``channel_stats(scale_pixels(pixels, max_value))`` from a histogram of uint8 pixels.

    A channel of uint8 pixels takes at most 256 values, so its mean and population std are
    sums of 256 terms count_v · s_v (s_v the float32 pixel value v / max_value, each
    product exact in float64): as accurate as ``math.fsum`` over every pixel, without a
    pass of float64 arithmetic over the images.

    Args:
        pixels: (N, H, W, C) uint8 training images.
        max_value: The largest possible pixel value.

    Returns:
        ``mean`` (C,) and ``std`` (C,), float64.

    Raises:
        ValueError: For non-uint8 or empty input, or a channel with zero variance.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] == 0:
        raise ValueError(
            f"Expected (N, H, W, C) uint8 pixels with N > 0, got {pixels.dtype} {pixels.shape}."
        )
    return _stats_from_counts(_channel_counts(pixels), max_value)


# Images per chunk of the lookup path: its uint16 index (6 MB for CIFAR) is reused, where
# one index of the whole set was a fresh 37-49 MB allocation whose page faults cost up to
# 0.4 s on the development VM (transparent huge pages waiting for compaction).
_TABLE_CHUNK_VALUES = 1 << 22


def _table_chunks(pixels: np.ndarray):
    """(rows, index) over chunks of images: index[..., c] = c·256 + pixel value (uint16)."""
    per_image = int(np.prod(pixels.shape[1:]))
    step = max(1, _TABLE_CHUNK_VALUES // per_image)
    offsets = np.arange(pixels.shape[-1], dtype=np.uint16) * 256
    buffer = np.empty((min(step, pixels.shape[0]), *pixels.shape[1:]), np.uint16)
    for lo in range(0, pixels.shape[0], step):
        hi = min(lo + step, pixels.shape[0])
        index = buffer[: hi - lo]
        np.add(pixels[lo:hi], offsets, out=index, dtype=np.uint16)
        yield slice(lo, hi), index


def _channel_counts(pixels: np.ndarray) -> np.ndarray:
    """(C, 256) counts of each uint8 value per channel."""
    channels = pixels.shape[-1]
    counts = np.zeros(256 * channels, np.int64)
    for _, index in _table_chunks(pixels):
        counts += np.bincount(index.reshape(-1), minlength=256 * channels)
    return counts.reshape(channels, 256)


def _stats_from_counts(counts: np.ndarray, max_value: float) -> tuple[np.ndarray, np.ndarray]:
    values = scale_pixels(np.arange(256, dtype=np.uint8), max_value).astype(np.float64)
    n = counts[0].sum()
    mean = counts @ values / n
    deviation = values[None, :] - mean[:, None]
    std = np.sqrt((counts * deviation * deviation).sum(axis=1) / n)
    _check_spread(std)
    return mean, std


def _prepare_by_table(
    train_px: np.ndarray, test_px: np.ndarray, max_value: float, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scales and normalises uint8 pixels into ``out`` (train rows, then test) by lookup.

    ``normalize_images(scale_pixels(v))`` for each of the 256 values of each channel,
    evaluated with the same float32 operations, then gathered: the bytes equal the two
    steps' (tests/core/test_data.py) in one pass over the output instead of three, with
    the statistics from ``pixel_channel_stats``'s histogram (``benchmarks/cpu_kernels.py
    --only prepare_data``).
    """
    mean, std = _stats_from_counts(_channel_counts(train_px), max_value)
    channels = out.shape[-1]
    values = scale_pixels(np.arange(256, dtype=np.uint8), max_value)  # (256,) float32
    table = normalize_images(np.repeat(values[:, None], channels, axis=1)[None, None], mean, std)
    flat_table = np.ascontiguousarray(table[0, 0].T).reshape(-1)  # [c * 256 + v]
    n_train = train_px.shape[0]
    for part, px in ((out[:n_train], train_px), (out[n_train:], test_px)):
        for rows, index in _table_chunks(px):
            np.take(flat_table, index, out=part[rows])
    return mean, std


def prepare_dataset(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    num_train: int,
    num_test: int,
    subset_seed: int,
    normalize: bool = True,
    max_value: float = 255.0,
) -> PreparedData:
    """Subsets, scales, normalises and concatenates the two splits.

    Steps (docs/methods.md §1.1): stratified seeded subsets of each split (indices kept in
    ascending order; the whole split when the count equals its size); pixels / 255
    (digits: / 16); per-channel mean and population std over the chosen **training**
    images, applied to both splits; concatenation train + test.

    Args:
        train_images: (N_tr, H, W, C) uint8.
        train_labels: (N_tr,) int.
        test_images: (N_te, H, W, C) uint8.
        test_labels: (N_te,) int.
        num_train: Resolved count (see :func:`resolve_subset_size`).
        num_test: Resolved count.
        subset_seed: ``random_state`` of both stratified draws.
        normalize: Whether to standardise per channel.
        max_value: Largest pixel value (255, 16 for digits).

    Returns:
        A :class:`PreparedData`.
    """
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"Train images {train_images.shape[1:]} and test images {test_images.shape[1:]} "
            "differ in shape."
        )
    train_idx = stratified_subset(train_labels, num_train, subset_seed)
    test_idx = stratified_subset(test_labels, num_test, subset_seed)
    # Both splits are scaled and normalised in place in the concatenated array (one
    # allocation instead of six of its size).
    n_train = len(train_idx)
    inputs = mapped_empty((n_train + len(test_idx), *train_images.shape[1:]), np.float32)
    train_px = np.asarray(train_images)[train_idx]
    test_px = np.asarray(test_images)[test_idx]
    channels = inputs.shape[-1]
    if normalize and train_px.dtype == np.uint8 and test_px.dtype == np.uint8:
        mean, std = _prepare_by_table(train_px, test_px, max_value, inputs)
    else:
        scale_pixels(train_px, max_value, out=inputs[:n_train])
        scale_pixels(test_px, max_value, out=inputs[n_train:])
        if normalize:
            mean, std = channel_stats(inputs[:n_train])
            normalize_images(inputs, mean, std, out=inputs)
        else:
            mean, std = np.zeros(channels), np.ones(channels)
    labels = np.concatenate(
        [np.asarray(train_labels)[train_idx], np.asarray(test_labels)[test_idx]]
    ).astype(np.int64)
    sample_index = np.concatenate([train_idx, len(train_labels) + test_idx]).astype(np.int64)
    logger.info(
        "Prepared %d train + %d test samples of shape %s; channel mean %s, std %s",
        num_train,
        num_test,
        inputs.shape[1:],
        np.round(mean, 4).tolist(),
        np.round(std, 4).tolist(),
    )
    return PreparedData(inputs, labels, sample_index, int(num_train), int(num_test), mean, std)
