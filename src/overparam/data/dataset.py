"""The Dataset container every loader returns: train/test tensors plus provenance."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch

from .checks import check_int
from .errors import DataError


@dataclass(eq=False)  # eq on tensors is elementwise, not a truth value, so no generated __eq__
class Dataset:
    """A train/test split held in memory as CPU tensors.

    X tensors are float32 with shape (n, *feature_shape). Targets are int64 class labels in
    [0, n_classes) for classification (``n_classes`` set), or float32 of shape (n,) or (n, k)
    for regression (``n_classes`` is None). ``meta`` records how the data were made (generator
    parameters, seed, corruptions) and must stay JSON-serializable so runs can store it.

    ``train_corrupted`` and ``y_train_clean`` are filled in by label corruptions: the boolean
    mask of training examples whose label was changed and the labels before the change, so
    memorization studies can ask whether a network fits the noisy or the original label.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int | None
    meta: dict = field(default_factory=dict)
    train_corrupted: torch.Tensor | None = None
    y_train_clean: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Mismatched lengths would otherwise surface much later as an index error mid-training.
        for split, X, y in (("train", self.X_train, self.y_train), ("test", self.X_test, self.y_test)):
            if X.shape[0] != y.shape[0]:
                raise DataError(
                    f"{self.name}: X_{split} has {X.shape[0]} examples but y_{split} has {y.shape[0]}"
                )
        if tuple(self.X_train.shape[1:]) != tuple(self.X_test.shape[1:]):
            raise DataError(
                f"{self.name}: train features have shape {tuple(self.X_train.shape[1:])} "
                f"but test features have shape {tuple(self.X_test.shape[1:])}"
            )

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.X_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return math.prod(self.feature_shape)

    @property
    def task(self) -> str:
        return "regression" if self.n_classes is None else "classification"

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` training and first ``n_test`` test examples (None keeps all).

        Taking a prefix (not a fresh sample) means growing n_train only ever adds examples,
        which is what sample-wise double-descent sweeps need.
        """
        keep_train = self.n_train if n_train is None else check_int("n_train", n_train, low=0)
        keep_test = self.n_test if n_test is None else check_int("n_test", n_test, low=0)
        if keep_train > self.n_train:
            raise DataError(f"n_train={keep_train} exceeds the {self.n_train} training examples of '{self.name}'")
        if keep_test > self.n_test:
            raise DataError(f"n_test={keep_test} exceeds the {self.n_test} test examples of '{self.name}'")
        meta = copy.deepcopy(self.meta)
        meta["n_train"], meta["n_test"] = keep_train, keep_test
        return replace(
            self,
            X_train=self.X_train[:keep_train].clone(),
            y_train=self.y_train[:keep_train].clone(),
            X_test=self.X_test[:keep_test].clone(),
            y_test=self.y_test[:keep_test].clone(),
            meta=meta,
            train_corrupted=None if self.train_corrupted is None else self.train_corrupted[:keep_train].clone(),
            y_train_clean=None if self.y_train_clean is None else self.y_train_clean[:keep_train].clone(),
        )

    def to(self, dtype: torch.dtype) -> Dataset:
        """Cast inputs, and float targets, to ``dtype`` (class labels stay int64)."""
        if not dtype.is_floating_point:
            raise DataError(f"Dataset.to needs a floating dtype such as torch.float64, got {dtype}")

        def cast_target(y: torch.Tensor | None) -> torch.Tensor | None:
            return y if y is None or not y.is_floating_point() else y.to(dtype)

        return replace(
            self,
            X_train=self.X_train.to(dtype),
            X_test=self.X_test.to(dtype),
            y_train=cast_target(self.y_train),
            y_test=cast_target(self.y_test),
            y_train_clean=cast_target(self.y_train_clean),
            meta=copy.deepcopy(self.meta),
        )

    def summary(self) -> dict:
        """A small JSON-serializable description, for logs and run records."""
        return {
            "name": self.name,
            "task": self.task,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "feature_shape": list(self.feature_shape),
            "input_dim": self.input_dim,
            "n_classes": self.n_classes,
            "meta": self.meta,
        }

    def __repr__(self) -> str:
        # The generated repr would print every tensor element.
        classes = f"n_classes={self.n_classes}" if self.n_classes is not None else "regression"
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"feature_shape={self.feature_shape}, {classes})"
        )
