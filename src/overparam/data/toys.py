"""Two-dimensional (or d-dimensional) synthetic classification toys: blobs, moons, spirals.

Train and test are drawn from separate seeded streams of one distribution, so changing
n_test never changes the training set (and vice versa).
"""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_choice, check_int, check_number
from .dataset import Dataset
from .errors import DataError
from .seeding import derive_seed, rng_for
from .splits import balanced_labels


def load_blobs(
    *,
    seed: int = 0,
    n_train: int = 1000,
    n_test: int = 1000,
    k: int = 2,
    d: int = 2,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] | list[float] = (-10.0, 10.0),
) -> Dataset:
    """Isotropic Gaussian clusters, ``k`` classes in ``d`` dimensions.

    Centers are uniform in the box [low, high]^d from the seed, the same way sklearn's
    make_blobs places them; each class is one cluster of standard deviation ``cluster_std``.
    """
    k = check_int("k", k, low=2)
    d = check_int("d", d, low=1)
    cluster_std = check_number("cluster_std", cluster_std, low=0.0)
    low, high = _check_box(center_box)
    centers = rng_for(seed, "centers").uniform(low, high, size=(k, d))

    def draw(n: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
        rng = rng_for(seed, stream)
        y = balanced_labels(n, k, rng)
        X = centers[y] + cluster_std * rng.standard_normal((n, d))
        return X, y

    X_train, y_train = draw(n_train, "train")
    X_test, y_test = draw(n_test, "test")
    meta = {
        "generator": "gaussian blobs",
        "k": k,
        "d": d,
        "cluster_std": cluster_std,
        "center_box": [low, high],
    }
    return _classification("blobs", X_train, y_train, X_test, y_test, k, meta)


def load_moons(*, seed: int = 0, n_train: int = 1000, n_test: int = 1000, noise: float = 0.1) -> Dataset:
    """sklearn's two interleaving half circles with Gaussian noise of std ``noise``."""
    noise = check_number("noise", noise, low=0.0)
    from sklearn.datasets import make_moons  # deferred: importing sklearn costs ~0.5 s

    def draw(n: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
        if n == 0:  # make_moons rejects an empty request
            return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        return make_moons(n_samples=n, noise=noise, shuffle=True, random_state=derive_seed(seed, stream))

    X_train, y_train = draw(n_train, "train")
    X_test, y_test = draw(n_test, "test")
    meta = {"generator": "sklearn.datasets.make_moons", "noise": noise}
    return _classification("moons", X_train, y_train, X_test, y_test, 2, meta)


def load_spirals(
    *,
    seed: int = 0,
    n_train: int = 1000,
    n_test: int = 1000,
    arms: int = 2,
    noise: float = 0.05,
    turns: float = 1.5,
) -> Dataset:
    """Interleaved spiral arms, one class per arm, radius growing from 0 to 1.

    A point at position t in [0, 1) along arm j sits at radius t and angle
    2*pi*(turns*t + j/arms); ``noise`` is the std of Gaussian noise added to each coordinate.
    """
    arms = int(check_choice("arms", check_int("arms", arms, low=2), (2, 3)))
    noise = check_number("noise", noise, low=0.0)
    turns = check_number("turns", turns, low=0.0, low_open=True)

    def draw(n: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
        rng = rng_for(seed, stream)
        y = balanced_labels(n, arms, rng)
        t = rng.uniform(0.0, 1.0, size=n)
        angle = 2 * np.pi * (turns * t + y / arms)
        X = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        return X + noise * rng.standard_normal((n, 2)), y

    X_train, y_train = draw(n_train, "train")
    X_test, y_test = draw(n_test, "test")
    meta = {"generator": "spirals", "arms": arms, "noise": noise, "turns": turns}
    return _classification("spirals", X_train, y_train, X_test, y_test, arms, meta)


def _check_box(center_box: object) -> tuple[float, float]:
    try:
        low, high = center_box  # type: ignore[misc]
    except (TypeError, ValueError):
        raise DataError(f"center_box must be a pair (low, high) with low < high, got {center_box!r}") from None
    low = check_number("center_box low", low)
    high = check_number("center_box high", high)
    if not low < high:
        raise DataError(f"center_box must be a pair (low, high) with low < high, got {center_box!r}")
    return low, high


def _classification(name, X_train, y_train, X_test, y_test, n_classes, meta) -> Dataset:
    return Dataset(
        name=name,
        X_train=torch.as_tensor(X_train, dtype=torch.float32),
        y_train=torch.as_tensor(y_train, dtype=torch.int64),
        X_test=torch.as_tensor(X_test, dtype=torch.float32),
        y_test=torch.as_tensor(y_test, dtype=torch.int64),
        n_classes=n_classes,
        meta=meta,
    )
