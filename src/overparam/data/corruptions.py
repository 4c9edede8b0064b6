"""Label and input corruptions from the memorization literature.

Label noise follows Nakkiran et al. 2019 (Deep Double Descent) and the MNIST-1D notebooks:
an exact, seeded subset of round(p*n) labels is replaced by a different label. The other
corruptions are Zhang et al. 2017's randomization tests (random labels, shuffled pixels,
random pixels, Gaussian inputs).

Every function returns new tensors and leaves its input untouched; randomness comes only
from the ``seed`` argument.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import torch

from .checks import check_choice, check_int, check_number
from .dataset import Dataset
from .errors import DataError
from .seeding import derive_seed, rng_for

CORRUPTIONS = ("none", "label_noise", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
LABEL_CORRUPTIONS = ("label_noise", "random_labels")
SPLIT_CHOICES = ("train", "test", "both")
# Which splits corrupt() touches unless told otherwise. A fixed pixel permutation and Gaussian
# inputs change the input distribution itself, so, as in Zhang et al., the test set goes too.
DEFAULT_SPLITS = {
    "label_noise": "train",
    "random_labels": "train",
    "shuffled_pixels": "both",
    "random_pixels": "train",
    "gaussian": "both",
}


def label_noise(y: torch.Tensor, p: float, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace exactly round(p * n) labels (halves round up), chosen at random, each by a
    uniformly random *different* class.

    Returns (new labels, boolean mask of the changed examples). Fixing the count, rather than
    flipping each label with probability p, makes the noise level exact at every n.
    """
    p = check_number("p", p, low=0.0, high=1.0)
    n_classes = check_int("n_classes", n_classes, low=2)
    labels = _check_labels(y, n_classes)
    n = len(labels)
    n_changed = math.floor(p * n + 0.5)
    rng = rng_for(seed, "label_noise")
    chosen = rng.choice(n, size=n_changed, replace=False)
    # An offset in 1..K-1 modulo K is uniform over the K-1 other classes and never zero.
    offsets = rng.integers(1, n_classes, size=n_changed)
    noisy = labels.copy()
    noisy[chosen] = (labels[chosen] + offsets) % n_classes
    changed = np.zeros(n, dtype=bool)
    changed[chosen] = True
    return torch.from_numpy(noisy).to(y.device), torch.from_numpy(changed).to(y.device)


def random_labels(y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """Every label drawn uniformly from the n_classes classes, ignoring the true label
    (about 1/K of them therefore keep their original value)."""
    n_classes = check_int("n_classes", n_classes, low=1)
    labels = _check_labels(y, n_classes)
    fresh = rng_for(seed, "random_labels").integers(0, n_classes, size=len(labels))
    return torch.from_numpy(fresh.astype(np.int64)).to(y.device)


def shuffle_pixels(X: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed permutation of the (flattened) features applied to every example.

    The permutation depends only on the seed and the number of features, so calls on the
    train and the test inputs with the same seed permute them identically.
    """
    flat = _flat_inputs(X)
    permutation = torch.from_numpy(rng_for(seed, "shuffled_pixels").permutation(flat.shape[1])).to(X.device)
    return flat[:, permutation].reshape(X.shape)


def random_pixels(X: torch.Tensor, seed: int) -> torch.Tensor:
    """A different random permutation of the (flattened) features for every example."""
    flat = _flat_inputs(X)
    # argsort of i.i.d. uniforms is a uniformly random permutation per row; drawing row by row
    # means example i gets the same permutation whatever the number of examples.
    keys = rng_for(seed, "random_pixels").random(tuple(flat.shape))
    permutations = torch.from_numpy(np.argsort(keys, axis=1)).to(X.device)
    return torch.gather(flat, 1, permutations).reshape(X.shape)


def gaussian_inputs(
    X: torch.Tensor, seed: int, *, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """Gaussian noise of X's shape with each feature's mean and standard deviation.

    The statistics are X's own unless ``mean`` / ``std`` (per feature) are given, e.g. the
    training statistics when replacing test inputs.
    """
    flat = _flat_inputs(X)
    mean = flat.double().mean(dim=0) if mean is None else mean.reshape(-1).double()
    std = flat.double().std(dim=0, unbiased=False) if std is None else std.reshape(-1).double()
    if mean.shape[0] != flat.shape[1] or std.shape[0] != flat.shape[1]:
        raise DataError(f"gaussian_inputs: mean and std need {flat.shape[1]} entries, one per feature")
    noise = torch.from_numpy(rng_for(seed, "gaussian").standard_normal(tuple(flat.shape)))
    return (mean.cpu() + std.cpu() * noise).to(dtype=X.dtype, device=X.device).reshape(X.shape)


def corrupt(
    dataset: Dataset, kind: str, *, p: float | None = None, seed: int = 0, apply_to: str | None = None
) -> Dataset:
    """A copy of ``dataset`` with one corruption applied, recorded in meta["corruptions"].

    kind: one of CORRUPTIONS. p (the fraction of labels to change) is required by, and only
    allowed with, "label_noise". apply_to: "train", "test" or "both"; the default is the
    training split, except "both" for shuffled_pixels and gaussian (see DEFAULT_SPLITS).
    Train and test draw from different seeded streams, except the shuffled-pixels
    permutation, which is shared. Label corruptions keep the original training labels in
    ``y_train_clean`` and mark changed ones in ``train_corrupted``.
    """
    kind = str(check_choice("kind", kind, CORRUPTIONS))
    seed = check_int("seed", seed, low=0)
    if p is not None and kind != "label_noise":
        raise DataError(f"p applies only to kind='label_noise', not {kind!r}")
    if kind == "none":
        return replace(dataset, meta=copy.deepcopy(dataset.meta))
    if kind == "label_noise" and p is None:
        raise DataError("kind='label_noise' needs p, the fraction of labels to change, in [0, 1]")
    if kind in LABEL_CORRUPTIONS and dataset.n_classes is None:
        raise DataError(f"{kind} needs a classification dataset; '{dataset.name}' is regression")
    splits = str(check_choice("apply_to", DEFAULT_SPLITS[kind] if apply_to is None else apply_to, SPLIT_CHOICES))
    touch_train, touch_test = splits in ("train", "both"), splits in ("test", "both")
    test_seed = seed if kind == "shuffled_pixels" else derive_seed(seed, "test")

    record: dict = {"kind": kind, "seed": seed, "apply_to": splits}
    changes: dict = {}
    if kind in LABEL_CORRUPTIONS:
        p_value = check_number("p", p, low=0.0, high=1.0) if p is not None else None
        if p_value is not None:
            record["p"] = p_value

        def relabel(y: torch.Tensor, split_seed: int) -> torch.Tensor:
            if kind == "label_noise":
                return label_noise(y, p_value, dataset.n_classes, split_seed)[0]
            return random_labels(y, dataset.n_classes, split_seed)

        if touch_train:
            clean = dataset.y_train if dataset.y_train_clean is None else dataset.y_train_clean
            changes["y_train"] = relabel(dataset.y_train, seed)
            changes["y_train_clean"] = clean.clone()
            # "Corrupted" means differs from the original label, which also composes over
            # repeated corruptions.
            changes["train_corrupted"] = changes["y_train"] != clean
            record["n_train_changed"] = int(changes["train_corrupted"].sum())
        if touch_test:
            changes["y_test"] = relabel(dataset.y_test, test_seed)
            record["n_test_changed"] = int((changes["y_test"] != dataset.y_test).sum())
    else:
        if kind == "gaussian":
            # Test inputs are replaced with noise matching the *training* statistics, so both
            # splits come from one distribution as in Zhang et al.
            flat_train = _flat_inputs(dataset.X_train).double()
            stats = {"mean": flat_train.mean(dim=0), "std": flat_train.std(dim=0, unbiased=False)}

            def reinput(X: torch.Tensor, split_seed: int) -> torch.Tensor:
                return gaussian_inputs(X, split_seed, **stats)
        else:
            reinput = shuffle_pixels if kind == "shuffled_pixels" else random_pixels
        if touch_train:
            changes["X_train"] = reinput(dataset.X_train, seed)
        if touch_test:
            changes["X_test"] = reinput(dataset.X_test, test_seed)

    meta = copy.deepcopy(dataset.meta)
    meta.setdefault("corruptions", []).append(record)
    return replace(dataset, meta=meta, **changes)


def _check_labels(y: torch.Tensor, n_classes: int) -> np.ndarray:
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point() or y.is_complex():
        raise DataError("labels must be a 1-D integer tensor of class indices")
    labels = y.detach().cpu().numpy().astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes - 1}] for n_classes={n_classes}")
    return labels


def _flat_inputs(X: torch.Tensor) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or X.ndim < 2:
        raise DataError("inputs must be a tensor of shape (n, *features)")
    return X.reshape(X.shape[0], -1)
