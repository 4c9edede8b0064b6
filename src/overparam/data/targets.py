"""Turning targets read from user files into class labels or regression targets."""

from __future__ import annotations

import numpy as np
import torch

from .checks import check_choice, check_int
from .errors import DataError

TASKS = ("auto", "classification", "regression")


def encode_targets(
    y_train: np.ndarray, y_test: np.ndarray, *, task: str = "auto", n_classes: int | None = None, source: str
) -> tuple[torch.Tensor, torch.Tensor, int | None, dict]:
    """Return (y_train, y_test, n_classes, meta) as the Dataset wants them.

    task="auto" decides by dtype: integer, boolean or text labels mean classification, floats
    mean regression. Non-negative integer labels are kept as they are (so digit 7 stays 7 even
    if a small file lacks some class); any other labels (text, negative numbers) are mapped to
    0..K-1 in sorted order and the original values are recorded in meta["label_values"].
    """
    task = str(check_choice("task", task, TASKS))
    if task == "auto":
        is_labels = y_train.dtype.kind in "biuUSO" and y_test.dtype.kind in "biuUSO"
        task = "classification" if is_labels else "regression"
    if task == "regression":
        if n_classes is not None:
            raise DataError("n_classes applies only to classification; this data has task='regression'")
        return _regression_targets(y_train, source), _regression_targets(y_test, source), None, {"task": task}
    return _class_labels(y_train, y_test, n_classes, source)


def _regression_targets(y: np.ndarray, source: str) -> torch.Tensor:
    if y.dtype.kind not in "biuf":
        raise DataError(f"{source}: regression targets must be numbers, got values like {y.flat[0]!r}")
    if y.ndim not in (1, 2):
        raise DataError(f"{source}: regression targets must have shape (n,) or (n, k), got {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"{source}: regression targets hold {int((~np.isfinite(y)).sum())} NaN or inf values; "
                        "every target must be a finite number")
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


def _class_labels(y_train, y_test, n_classes, source) -> tuple[torch.Tensor, torch.Tensor, int, dict]:
    y_train, y_test = _as_label_vector(y_train, source), _as_label_vector(y_test, source)
    both = np.concatenate([y_train, y_test])
    meta: dict = {"task": "classification"}
    if both.dtype.kind == "f":
        if not np.all(np.isfinite(both)) or not np.all(both == np.round(both)):
            raise DataError(f"{source}: classification labels must be whole numbers or text; use task='regression'")
        both = both.astype(np.int64)
    if both.dtype.kind in "biu" and (both.size == 0 or both.min() >= 0):
        codes = both.astype(np.int64)
        needed = int(codes.max()) + 1 if codes.size else 1
    else:
        values, codes = np.unique(both.astype(str) if both.dtype.kind in "USO" else both, return_inverse=True)
        needed = len(values)
        meta["label_values"] = values.tolist()
    if n_classes is None:
        n_classes = needed
    else:
        n_classes = check_int("n_classes", n_classes, low=needed)
    meta["n_classes"] = n_classes
    codes = torch.from_numpy(np.asarray(codes, dtype=np.int64).reshape(-1))
    return codes[: len(y_train)].clone(), codes[len(y_train) :].clone(), n_classes, meta


def _as_label_vector(y: np.ndarray, source: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{source}: class labels must have shape (n,), got {y.shape}")
    if y.dtype.kind not in "biufUSO":
        raise DataError(f"{source}: class labels must be integers or text, got dtype {y.dtype}")
    return y
