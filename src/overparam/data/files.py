"""User data from files: .npz archives and .csv tables.

Both read only from disk. A file with a single pool of examples is split by a seeded
shuffle (test_fraction to test); n_train / n_test then keep prefixes of the two splits.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import torch

from .checks import check_bool, check_int
from .dataset import Dataset
from .errors import DataError
from .splits import shuffled_split
from .targets import encode_targets

SPLIT_KEYS = ("X_train", "y_train", "X_test", "y_test")
POOL_KEYS = ("X", "y")


def load_npz(
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    test_fraction: float = 0.2,
    task: str = "auto",
    n_classes: int | None = None,
) -> Dataset:
    """Arrays X_train, y_train, X_test, y_test — or X, y, split here by a seeded shuffle."""
    file = resolve_data_file(path, data_dir, ".npz", "npz")
    arrays = _read_npz(file)
    if all(key in arrays for key in SPLIT_KEYS):
        X_train, y_train, X_test, y_test = (arrays[key] for key in SPLIT_KEYS)
        split = "as stored in the file"
    elif all(key in arrays for key in POOL_KEYS):
        X, y = arrays["X"], arrays["y"]
        _check_same_length(X, y, "X", "y", file)
        train_idx, test_idx = shuffled_split(len(y), test_fraction, seed)
        X_train, y_train, X_test, y_test = X[train_idx], y[train_idx], X[test_idx], y[test_idx]
        split = f"seeded shuffle, test_fraction={float(test_fraction):g}"
    else:
        raise DataError(
            f"npz file {file} has keys [{', '.join(sorted(arrays))}]; "
            f"expected {', '.join(SPLIT_KEYS)} or {', '.join(POOL_KEYS)}"
        )
    _check_same_length(X_train, y_train, "X_train", "y_train", file)
    _check_same_length(X_test, y_test, "X_test", "y_test", file)
    return _build("npz", file, split, X_train, y_train, X_test, y_test, task, n_classes).subset(n_train, n_test)


def load_csv(
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    label_column: int | str = -1,
    header: bool | None = None,
    delimiter: str = ",",
    test_fraction: float = 0.2,
    task: str = "auto",
    n_classes: int | None = None,
) -> Dataset:
    """A table with one example per row: numeric feature columns and one label column.

    label_column is an index (default -1, the last column) or a column name from the header.
    header=None detects a header row: the first row is a header if any of its feature cells is
    not a number. Labels that are all integers, or any text, mean classification; labels with
    decimals mean regression (override with task=...).
    """
    file = resolve_data_file(path, data_dir, ".csv", "csv")
    rows = _read_csv_rows(file, delimiter)
    width = len(rows[0][1])
    header_row, label_at = _locate_header_and_label(rows, label_column, header, file)
    data_rows = rows[1:] if header_row is not None else rows
    if not data_rows:
        raise DataError(f"csv file {file} has a header but no data rows")
    feature_columns = [c for c in range(width) if c != label_at]
    X = np.empty((len(data_rows), len(feature_columns)), dtype=np.float64)
    for r, (line_number, cells) in enumerate(data_rows):
        for j, c in enumerate(feature_columns):
            number = _parse_float(cells[c])
            if number is None:
                raise DataError(
                    f"csv file {file} line {line_number} column {c + 1}: {cells[c]!r} is not a number"
                )
            X[r, j] = number
    for line_number, cells in data_rows:
        if not cells[label_at].strip():
            raise DataError(f"csv file {file} line {line_number}: the label (column {label_at + 1}) is empty")
    y = _parse_label_column([cells[label_at].strip() for _, cells in data_rows])
    train_idx, test_idx = shuffled_split(len(y), test_fraction, seed)
    split = f"seeded shuffle, test_fraction={float(test_fraction):g}"
    dataset = _build("csv", file, split, X[train_idx], y[train_idx], X[test_idx], y[test_idx], task, n_classes)
    dataset.meta["label_column"] = label_at
    if header_row is not None:
        dataset.meta["columns"] = [cell.strip() for cell in header_row]
    return dataset.subset(n_train, n_test)


def resolve_data_file(path: str | Path | None, data_dir: str | Path | None, suffix: str, dataset: str) -> Path:
    """The file to read: ``path`` (relative paths are taken inside data_dir), or else the
    single ``*suffix`` file in data_dir."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_absolute() and data_dir is not None:
            file = Path(data_dir).expanduser() / file
    elif data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data directory not found: {folder}")
        found = sorted(folder.glob(f"*{suffix}"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise DataError(f"{what} {suffix} files in {folder}; pass path=<file{suffix}> to choose one")
        file = found[0]
    else:
        raise DataError(f"dataset '{dataset}' needs path=<file{suffix}> or data_dir=<folder>")
    if not file.is_file():
        raise DataError(f"data file not found: {file}")
    return file


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        # allow_pickle=False: object arrays would run arbitrary code on load, so they are refused.
        raise DataError(f"cannot read npz file {file}: {_first_line(error)}") from None


def _read_csv_rows(file: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers (for error messages)."""
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"delimiter must be a single character, got {delimiter!r}")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:  # -sig: tolerate an Excel BOM
            rows = [(number, cells) for number, cells in enumerate(csv.reader(handle, delimiter=delimiter), 1)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read csv file {file}: {_first_line(error)}") from None
    rows = [(number, cells) for number, cells in rows if any(cell.strip() for cell in cells)]
    if not rows:
        raise DataError(f"csv file {file} is empty")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(f"csv file {file} needs at least two columns (features and a label), found {width}")
    for number, cells in rows:
        if len(cells) != width:
            raise DataError(f"csv file {file} line {number} has {len(cells)} columns, expected {width}")
    return rows


def _locate_header_and_label(rows, label_column, header, file) -> tuple[list[str] | None, int]:
    first = rows[0][1]
    width = len(first)
    header = None if header is None else check_bool("header", header)
    if isinstance(label_column, str) and not _is_int_text(label_column):
        if header is False:
            raise DataError(f"label_column={label_column!r} is a column name but header=False")
        names = [cell.strip() for cell in first]
        if label_column not in names:
            raise DataError(f"label_column {label_column!r} not in the header of {file}; columns: {', '.join(names)}")
        return first, names.index(label_column)
    index = check_int("label_column", label_column, low=-width, high=width - 1) % width
    if header is None:
        has_header = any(_parse_float(cell) is None for c, cell in enumerate(first) if c != index)
    else:
        has_header = header
    return (first if has_header else None), index


def _parse_label_column(cells: list[str]) -> np.ndarray:
    """int64 if every label is an integer, float64 if every label is a number, else text."""
    if all(_is_int_text(cell) for cell in cells):
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    numbers = [_parse_float(cell) for cell in cells]
    if all(number is not None for number in numbers):
        return np.array(numbers, dtype=np.float64)
    return np.array(cells, dtype=str)


def _build(name, file, split, X_train, y_train, X_test, y_test, task, n_classes) -> Dataset:
    X_train, X_test = _features(X_train, file), _features(X_test, file)
    y_train_t, y_test_t, n_classes, target_meta = encode_targets(
        np.asarray(y_train), np.asarray(y_test), task=task, n_classes=n_classes, source=str(file)
    )
    return Dataset(
        name=name,
        X_train=X_train,
        y_train=y_train_t,
        X_test=X_test,
        y_test=y_test_t,
        n_classes=n_classes,
        meta={"path": str(file.resolve()), "split": split, **target_meta},
    )


def _features(X: np.ndarray, file: Path) -> torch.Tensor:
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise DataError(f"{file}: features must be real numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataError(f"{file}: features hold {int((~np.isfinite(X)).sum())} NaN or inf values; "
                        "every feature must be a finite number")
    if X.ndim == 1:  # one feature per example, as in 1-D regression
        X = X[:, None]
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _check_same_length(X: np.ndarray, y: np.ndarray, x_name: str, y_name: str, file: Path) -> None:
    if X.ndim == 0 or y.ndim == 0 or len(X) != len(y):
        raise DataError(f"{file}: {x_name} has shape {X.shape} but {y_name} has shape {y.shape}; lengths must match")


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_int_text(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
