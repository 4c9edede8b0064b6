"""Seeded train/test splitting of a single pool of examples."""

from __future__ import annotations

import math

import numpy as np

from .checks import check_number
from .errors import DataError
from .seeding import rng_for


def shuffled_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a seeded shuffle of ``n`` examples.

    The test size is ceil(test_fraction * n), matching sklearn's train_test_split, so the
    digits default (0.3 of 1797) gives the familiar 1257/540.
    """
    fraction = check_number("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    n_test = math.ceil(fraction * n)
    if n_test >= n:
        raise DataError(f"test_fraction={fraction:g} leaves no training examples out of {n}")
    order = rng_for(seed, "split").permutation(n)
    return order[n_test:], order[:n_test]


def balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels with class counts differing by at most one, in random order.

    Balanced classes keep small toy datasets from being dominated by sampling luck.
    """
    return rng.permutation(np.arange(n) % n_classes)
