"""Binary tasks built from NTK eigenfunctions (docs/methods.md §3.2)."""

from __future__ import annotations

import numpy as np


def binarize_eigenfunction(eigenvectors: np.ndarray, index: int) -> np.ndarray:
    """Labels y_i = 1 where u_index[i] > 0, else 0 (exact zeros → 0), docs/methods.md §3.2.

    Args:
        eigenvectors: (k, N) eigenvectors as rows.
        index: eigenfunction index j, 0 <= j < k.

    Returns:
        (N,) float32 labels in {0, 1}.
    """
    eigenvectors = np.asarray(eigenvectors)
    if eigenvectors.ndim != 2:
        raise ValueError(f"eigenvectors must be (k, N); got shape {eigenvectors.shape}.")
    k = eigenvectors.shape[0]
    if not 0 <= index < k:
        raise ValueError(
            f"Eigenfunction index {index} is out of range: the stored spectrum has k={k} "
            f"eigenvectors (indices 0..{k - 1}). Use a smaller label_idx or rerun "
            "ntk_spectrum with a larger ntk.num_eigvecs."
        )
    return (eigenvectors[index] > 0).astype(np.float32)


def majority_baseline(labels: np.ndarray) -> float:
    """Accuracy of always predicting the more frequent class."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    positive = float(np.mean(labels > 0.5))
    return max(positive, 1.0 - positive)
