"""A run's stored arrays (``arrays.npz``) as plottable series for the browser.

A 1-D array is one series; a 2-D array is one series per row (or per column when it has few columns and
many rows, e.g. a (steps, replicas) history); anything larger, or with too many series, is listed with its
shape and not sent. Non-finite values become null (a gap in the plot).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

MAX_SERIES = 64
MAX_VALUES = 200_000


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.astype(float).tolist()]


def series_of(name: str, array: np.ndarray) -> dict[str, Any]:
    """{name, shape, series: [[...], ...] or None, layout: 'values'|'rows'|'columns', why}"""
    out: dict[str, Any] = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "series": None,
                           "layout": None, "why": ""}
    if array.dtype.kind not in "biuf":
        return out | {"why": f"{array.dtype} values are not plotted"}
    if array.size > MAX_VALUES:
        return out | {"why": f"{array.size} values: too many to plot here"}
    if array.ndim == 0:
        return out | {"why": "a single number"}
    if array.ndim == 1:
        return out | {"series": [_finite_list(array)], "layout": "values"}
    if array.ndim == 2:
        rows, cols = array.shape
        if rows <= MAX_SERIES and (rows <= cols or cols > MAX_SERIES):
            return out | {"series": [_finite_list(r) for r in array], "layout": "rows"}
        if cols <= MAX_SERIES:
            return out | {"series": [_finite_list(c) for c in array.T], "layout": "columns"}
        return out | {"why": f"a {rows}x{cols} matrix: too many series to plot"}
    return out | {"why": f"{array.ndim}-dimensional"}


def read_arrays(path: Path) -> list[dict[str, Any]]:
    """Every array of an npz file as series (see :func:`series_of`); [] when there is no file."""
    if not path.is_file():
        return []
    try:
        with np.load(path, allow_pickle=False) as z:
            return [series_of(name, z[name]) for name in z.files]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return [{"name": "arrays.npz", "shape": [], "series": None, "layout": None,
                 "why": f"unreadable: {type(exc).__name__}"}]
