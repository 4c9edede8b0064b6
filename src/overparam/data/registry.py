"""The dataset registry: names, one-line descriptions, and load_dataset."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from .checks import check_int
from .dataset import Dataset
from .digits import load_digits
from .errors import DataError
from .files import load_csv, load_npz
from .idx import load_mnist
from .mnist1d_data import load_mnist1d
from .patterns import load_patterns
from .regression1d import load_doppler, load_piecewise
from .seeding import check_seed
from .toys import load_blobs, load_moons, load_spirals

_LOADERS: dict[str, tuple[Callable[..., Dataset], str]] = {
    "blobs": (load_blobs, "Gaussian blobs, k classes in d dims, 1000/1000 (options k, d, cluster_std, center_box)"),
    "moons": (load_moons, "two interleaving half circles, 2-D, 2 classes, 1000/1000 (option noise)"),
    "spirals": (load_spirals, "spiral arms, 2-D, a class per arm, 1000/1000 (options arms, noise, turns)"),
    "mnist1d": (load_mnist1d, "MNIST-1D generated offline, 40 features, 10 classes, 4000/1000 (option mnist1d_seed)"),
    "digits": (load_digits, "sklearn 8x8 digits, 64 features in [0,1], 10 classes, 1257/540 (option test_fraction)"),
    "doppler": (load_doppler, "1-D regression, Doppler function, clean grid test set (options noise_std, design)"),
    "piecewise": (load_piecewise, "1-D regression, kinks, cubic and a jump, clean grid test set (noise_std, design)"),
    "patterns": (load_patterns, "random unit-norm patterns with random targets, d=256 (options d, targets, k)"),
    "npz": (load_npz, "arrays from a .npz file: X_train/y_train/X_test/y_test or X/y (path or data_dir)"),
    "csv": (load_csv, "a .csv table, label in the last column by default (path or data_dir)"),
    "mnist": (load_mnist, "MNIST-format IDX files in data_dir, pixels in [0,1], 784 features (flatten, n_classes)"),
}

# name -> one-line description, for listing choices (e.g. in the CLI)
DATASETS: dict[str, str] = {name: description for name, (_, description) in _LOADERS.items()}

# Arguments every loader takes from load_dataset itself rather than from **options.
_COMMON_ARGUMENTS = ("seed", "n_train", "n_test", "data_dir")
_FILE_SUFFIXES = {".npz": "npz", ".csv": "csv"}


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | Path | None = None,
    **options: object,
) -> Dataset:
    """Load or generate the dataset registered as ``name`` (see DATASETS).

    seed: drives every random choice of generated datasets and seeded splits (mnist1d uses
        its own ``mnist1d_seed`` option instead; mnist keeps the files' order).
    n_train, n_test: sizes; None means the dataset's default. Generated datasets draw that
        many examples; fixed datasets (digits, files) keep the first n of each split.
    data_dir: folder for file-based datasets (ignored by generated ones).
    options: dataset-specific, see ``dataset_options(name)``; unknown options are an error.

    A path ending in .npz or .csv may be given as ``name``; it is read as that file type.
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}")
    key = name.strip().lower()
    if key not in _LOADERS and Path(key).suffix in _FILE_SUFFIXES:
        if "path" in options:
            raise DataError(f"dataset {name!r} is already a file path; do not also pass path=")
        options = {**options, "path": name}
        key = _FILE_SUFFIXES[Path(key).suffix]
    loader = _loader(key)
    seed = check_seed(seed)
    accepted = dataset_options(key)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) or "none"
        raise DataError(f"unknown option {', '.join(map(repr, unknown))} for dataset '{key}'; allowed: {allowed}")
    arguments: dict[str, object] = {"seed": seed, **options}
    if n_train is not None:
        arguments["n_train"] = check_int("n_train", n_train, low=1)
    if n_test is not None:
        arguments["n_test"] = check_int("n_test", n_test, low=0)
    if data_dir is not None and "data_dir" in inspect.signature(loader).parameters:
        arguments["data_dir"] = data_dir
    dataset = loader(**arguments)
    # Provenance first, the loader's own description after; all JSON-serializable.
    dataset.meta = {
        "dataset": key,
        "seed": seed,
        "n_train": dataset.n_train,
        "n_test": dataset.n_test,
        "options": {option: _jsonable(value) for option, value in options.items()},
        **{k: v for k, v in dataset.meta.items() if k not in ("n_train", "n_test")},
    }
    return dataset


def dataset_options(name: str) -> dict[str, object]:
    """The dataset-specific options of ``name`` with their defaults (JSON-friendly)."""
    parameters = inspect.signature(_loader(name)).parameters
    return {
        option: _jsonable(parameter.default)
        for option, parameter in parameters.items()
        if option not in _COMMON_ARGUMENTS
    }


def _loader(name: str) -> Callable[..., Dataset]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _LOADERS:
        choices = ", ".join(sorted(_LOADERS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {choices} (or a .npz/.csv path)")
    return _LOADERS[key][0]


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def check_source(name: str, data_dir: str | Path | None = None, **options: object) -> None:
    """Check, without reading them, that a file-based dataset's files are there.

    Lets a run refuse a missing folder or file before it records anything. Generated datasets
    need no files and always pass.
    """
    from .files import resolve_data_file
    from .idx import MNIST_FILES, _find_idx_file

    key = _loader(name) and name.strip().lower()
    if key == "mnist":
        if data_dir is None or str(data_dir) == "":
            raise DataError(f"dataset 'mnist' needs data_dir=<folder with {', '.join(MNIST_FILES.values())}>")
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data directory not found: {folder}")
        for stem in MNIST_FILES.values():
            _find_idx_file(folder, stem)
    elif key in ("npz", "csv"):
        resolve_data_file(options.get("path"), data_dir or None, f".{key}", key)
