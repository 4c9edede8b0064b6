"""MNIST-1D (Greydanus 2020), generated locally from the package's ten 1-D templates.

Never calls mnist1d.get_dataset: that downloads a pickle. make_dataset builds the same data
offline from templates; with mnist1d_seed=42 and the default sizes (4000 train / 1000 test)
the result equals the reference dataset of the MNIST-1D paper.

The ``seed`` argument of load_dataset does not affect this dataset: generation is governed by
``mnist1d_seed`` alone, so that seed sweeps over training runs share one fixed dataset unless
the caller asks otherwise.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .checks import check_int
from .dataset import Dataset
from .seeding import preserved_global_rng

REFERENCE_SEED = 42
REFERENCE_TRAIN = 4000
REFERENCE_TEST = 1000
N_CLASSES = 10


def load_mnist1d(
    *, seed: int = 0, n_train: int = REFERENCE_TRAIN, n_test: int = REFERENCE_TEST, mnist1d_seed: int = REFERENCE_SEED
) -> Dataset:
    """MNIST-1D: inputs (n, 40) float32, labels 0..9.

    Examples come from one generated pool. Whenever n_train <= 4000 and n_test <= 1000 the
    pool is the reference 5000-example pool, the training set is a prefix of the reference
    training split and the test set a prefix of the reference test split, so sweeping n_train
    keeps the test set fixed. Larger requests generate a larger pool (make_dataset draws every
    example afresh when the pool size changes, so those are not extensions of the reference).
    """
    mnist1d_seed = check_int("mnist1d_seed", mnist1d_seed, low=0, high=2**32 - 1)
    split_at = max(REFERENCE_TRAIN, n_train)
    # make_dataset draws num_samples // 10 per class, so round the pool up to a multiple of 10.
    pool_size = 10 * math.ceil(max(REFERENCE_TRAIN + REFERENCE_TEST, split_at + n_test) / 10)
    xs, ys = _generate_pool(pool_size, mnist1d_seed)
    meta = {
        "generator": "mnist1d.data.make_dataset",
        "mnist1d_seed": mnist1d_seed,
        "pool_size": pool_size,
        "train_slice": [0, n_train],
        "test_slice": [split_at, split_at + n_test],
        "is_reference_pool": pool_size == REFERENCE_TRAIN + REFERENCE_TEST and mnist1d_seed == REFERENCE_SEED,
        "note": "seed does not affect mnist1d; mnist1d_seed controls generation",
    }
    return Dataset(
        name="mnist1d",
        X_train=torch.from_numpy(xs[:n_train].astype(np.float32)),
        y_train=torch.from_numpy(ys[:n_train].astype(np.int64)),
        X_test=torch.from_numpy(xs[split_at : split_at + n_test].astype(np.float32)),
        y_test=torch.from_numpy(ys[split_at : split_at + n_test].astype(np.int64)),
        n_classes=N_CLASSES,
        meta=meta,
    )


@functools.lru_cache(maxsize=4)
def _generate_pool(num_samples: int, mnist1d_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The full shuffled, normalized pool of ``num_samples`` examples (about 1 s per 5000).

    Cached because studies load the same dataset many times in one process; the arrays are
    made read-only so no caller can alter the cached copy.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # deferred: pulls in scipy and matplotlib

    args = get_dataset_args()
    args.num_samples = num_samples
    # Everything goes to "train" here and the loader slices; normalization uses the whole pool
    # either way, so values equal those of the default 0.8 split.
    args.train_split = 1.0
    args.seed = mnist1d_seed
    with preserved_global_rng():  # make_dataset reseeds numpy's and python's global RNGs
        generated = make_dataset(args)
    xs, ys = np.asarray(generated["x"]), np.asarray(generated["y"])
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys
