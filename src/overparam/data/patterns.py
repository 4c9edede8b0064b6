"""Random unit-norm patterns with random targets, for associative-memory and capacity studies.

There is no structure linking inputs to targets, so anything a network gets right on the
training set is memorized; the test set (fresh patterns, fresh targets) sits at chance.
"""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_choice, check_int
from .dataset import Dataset
from .errors import DataError
from .seeding import rng_for

TARGET_KINDS = ("sign", "gaussian", "classes")


def load_patterns(
    *,
    seed: int = 0,
    n_train: int = 100,
    n_test: int = 100,
    d: int = 256,
    targets: str = "sign",
    k: int | None = None,
) -> Dataset:
    """``n`` Gaussian patterns in ``d`` dimensions, each rescaled to unit Euclidean length.

    targets:
      - "sign": float targets, +1 or -1 with equal probability (shape (n,));
      - "gaussian": float standard-normal targets, shape (n,) or (n, k) when k > 1 (default k=1);
      - "classes": int64 labels uniform over k classes (default k=2).
    """
    d = check_int("d", d, low=1)
    targets = str(check_choice("targets", targets, TARGET_KINDS))
    if targets == "sign" and k is not None:
        raise DataError("k applies only to targets='gaussian' (output columns) or 'classes' (number of classes)")
    if targets == "classes":
        k = 2 if k is None else check_int("k", k, low=2)
    elif targets == "gaussian":
        k = 1 if k is None else check_int("k", k, low=1)

    def draw(n: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
        rng = rng_for(seed, stream)
        X = rng.standard_normal((n, d))
        # Unit length puts every pattern on the sphere, so capacity depends on count and d only.
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        if targets == "sign":
            y = rng.choice(np.array([-1.0, 1.0]), size=n)
        elif targets == "gaussian":
            y = rng.standard_normal((n, k) if k > 1 else n)
        else:
            y = rng.integers(0, k, size=n)
        return X, y

    X_train, y_train = draw(n_train, "train")
    X_test, y_test = draw(n_test, "test")
    target_dtype = torch.int64 if targets == "classes" else torch.float32
    meta = {"generator": "unit-norm gaussian patterns", "d": d, "targets": targets}
    if k is not None:
        meta["k"] = k
    return Dataset(
        name="patterns",
        X_train=torch.as_tensor(X_train, dtype=torch.float32),
        y_train=torch.as_tensor(y_train, dtype=target_dtype),
        X_test=torch.as_tensor(X_test, dtype=torch.float32),
        y_test=torch.as_tensor(y_test, dtype=target_dtype),
        n_classes=k if targets == "classes" else None,
        meta=meta,
    )
