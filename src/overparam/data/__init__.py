"""The data layer: datasets as in-memory train/test tensors, and corruptions of them.

Everything is generated or read locally (never downloaded) and deterministic in a seed.
It knows nothing of models or training.

    from overparam.data import load_dataset, corrupt
    data = load_dataset("mnist1d", n_train=1000)
    noisy = corrupt(data, "label_noise", p=0.15, seed=1)
"""

from .corruptions import (
    CORRUPTIONS,
    corrupt,
    gaussian_inputs,
    label_noise,
    random_labels,
    random_pixels,
    shuffle_pixels,
)
from .dataset import Dataset
from .errors import DataError
from .idx import read_idx
from .registry import DATASETS, check_source, dataset_options, load_dataset
from .regression1d import TARGET_FUNCTIONS, doppler, piecewise

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "DataError",
    "Dataset",
    "TARGET_FUNCTIONS",
    "check_source",
    "corrupt",
    "dataset_options",
    "doppler",
    "gaussian_inputs",
    "label_noise",
    "load_dataset",
    "piecewise",
    "random_labels",
    "random_pixels",
    "read_idx",
    "shuffle_pixels",
]
