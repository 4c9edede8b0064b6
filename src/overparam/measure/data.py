"""The data instruments accept: ``(X, y)`` tensors, a ``TensorDataset``, or any ``DataLoader``.

Everything is turned into an iterator of ``(x, y)`` batches, so an instrument streams large data
and its memory does not grow with the number of examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

DataLike = Any  # (X, y) | TensorDataset | DataLoader


def iter_batches(data: DataLike, batch_size: int = 1024, dtype: torch.dtype | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches in a fixed order; float inputs (and float targets) cast to ``dtype``."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        X, y = data
        if len(X) != len(y):
            raise ValueError(f"data: X has {len(X)} rows but y has {len(y)}")
        batches = ((X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size))
    elif isinstance(data, DataLoader):
        batches = iter(data)
    elif isinstance(data, Dataset):
        batches = iter(DataLoader(data, batch_size=batch_size, shuffle=False))
    else:
        raise TypeError(f"data must be (X, y) tensors, a TensorDataset or a DataLoader, got {type(data).__name__}")
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("each batch must be an (inputs, targets) pair")
        xb, yb = batch[0], batch[1]  # new names: the generator above still reads X and y lazily
        if dtype is not None:
            xb = xb.to(dtype) if torch.is_floating_point(xb) else xb
            yb = yb.to(dtype) if torch.is_floating_point(yb) else yb
        yield xb, yb


def count_examples(data: DataLike) -> int:
    """Number of examples, without loading a DataLoader's data into memory."""
    if isinstance(data, (tuple, list)):
        return len(data[0])
    if isinstance(data, DataLoader):
        return len(data.dataset)
    return len(data)


__all__ = ["DataLike", "iter_batches", "count_examples", "TensorDataset"]
