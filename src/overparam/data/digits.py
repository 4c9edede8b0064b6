"""sklearn's bundled 8x8 handwritten digits (1797 images, no download needed)."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset
from .splits import shuffled_split


def load_digits(
    *, seed: int = 0, n_train: int | None = None, n_test: int | None = None, test_fraction: float = 0.3
) -> Dataset:
    """Digits flattened to 64 features scaled to [0, 1] (raw pixels are 0..16), labels 0..9.

    A seeded shuffle splits the 1797 images, ceil(test_fraction * 1797) to test (default
    1257/540); n_train / n_test then keep prefixes of those splits.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits  # deferred: sklearn import is slow

    bunch = sklearn_load_digits()
    X = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = shuffled_split(len(y), test_fraction, seed)
    full = Dataset(
        name="digits",
        X_train=torch.from_numpy(X[train_idx]),
        y_train=torch.from_numpy(y[train_idx]),
        X_test=torch.from_numpy(X[test_idx]),
        y_test=torch.from_numpy(y[test_idx]),
        n_classes=10,
        meta={"source": "sklearn.datasets.load_digits", "test_fraction": float(test_fraction), "pixel_scale": "x/16"},
    )
    return full.subset(n_train, n_test)
