"""The data instruments accept, and how a model reads it.

Data may be ``(X, y)`` tensors, a ``Dataset`` or any ``DataLoader``; its batches may be ``(inputs, targets)``
pairs or anything else (dicts of tensors, tuples of several inputs). Everything becomes a stream of
:class:`Batch` es, so an instrument's memory does not grow with the number of examples:

- by default a batch is ``(x, y)``: the model is called as ``model(x)`` and the loss as ``loss_fn(outputs, y)``;
- ``inputs_of(batch)`` says what the model reads from any other batch (a tensor, a tuple of positional
  arguments, or a dict of keyword arguments), and the loss is then ``loss_fn(outputs, batch)``
  (a language model: ``inputs_of=lambda b: (b["tokens"], b["mask"])``, ``loss_fn=lm_loss``).

Floating tensors are cast to the instrument's dtype and everything moves to its device (the model's, by default).
Each batch carries its number of examples ``n``: an instrument's mean over the data weights batches by it, so the
result equals the full-batch one.

Models with BatchNorm or Dropout are measured in eval mode by every instrument (running statistics, no dropout):
a training-mode output depends on the rest of the batch or on randomness, so the loss of one example is not a
function of that example and its weights alone. :func:`eval_semantics` applies this once for all instruments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

DataLike = Any  # (X, y) | Dataset | DataLoader | any iterable of batches
InputsOf = Callable[[Any], Any]


@dataclass
class Batch:
    """One batch as an instrument uses it: the model's arguments, what the loss compares with, its size."""

    args: tuple
    kwargs: dict
    target: Any          # y for (x, y) batches, else the whole batch (for ``loss_fn(outputs, batch)``)
    n: int

    def call(self, model_call: Callable[..., torch.Tensor]) -> torch.Tensor:
        return model_call(*self.args, **self.kwargs)


def convert(obj: Any, dtype: torch.dtype | None, device: torch.device | str | None) -> Any:
    """Tensors inside ``obj`` (nested dicts, lists, tuples) on ``device``, floating ones in ``dtype``."""
    if torch.is_tensor(obj):
        if torch.is_floating_point(obj) and dtype is not None:
            return obj.to(device=device, dtype=dtype)
        return obj.to(device) if device is not None else obj
    if isinstance(obj, Mapping):
        return type(obj)((k, convert(v, dtype, device)) for k, v in obj.items()) if type(obj) is not dict \
            else {k: convert(v, dtype, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(convert(v, dtype, device) for v in obj)
    return obj


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if torch.is_tensor(obj):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (list, tuple)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def _raw_batches(data: DataLike, batch_size: int) -> Iterator[Any]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        X, y = data
        if len(X) != len(y):
            raise ValueError(f"data: X has {len(X)} rows but y has {len(y)}")
        return ((X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(X), batch_size))
    if isinstance(data, Mapping) and data and all(torch.is_tensor(v) for v in data.values()):
        n = len(next(iter(data.values())))   # a dict of equally long tensors: one example per row
        return ({k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size))
    if isinstance(data, DataLoader):
        return iter(data)
    if isinstance(data, Dataset):
        return iter(DataLoader(data, batch_size=batch_size, shuffle=False))
    if isinstance(data, (list, tuple)) or hasattr(data, "__iter__"):
        return iter(data)   # any iterable of batches (a list of dicts, a generator)
    raise TypeError(f"data must be (X, y) tensors, a Dataset, a DataLoader or an iterable of batches, "
                    f"got {type(data).__name__}")


def batches(data: DataLike, batch_size: int = 1024, dtype: torch.dtype | None = None,
            device: torch.device | str | None = None, inputs_of: InputsOf | None = None) -> Iterator[Batch]:
    """The data as :class:`Batch` es, in a fixed order (see the module docstring)."""
    for raw in _raw_batches(data, batch_size):
        raw = convert(raw, dtype, device)
        if inputs_of is None:
            if not isinstance(raw, (tuple, list)) or len(raw) < 2:
                raise TypeError("each batch must be an (inputs, targets) pair; for other batches (dicts, several "
                                "inputs) pass inputs_of=... and a loss_fn(outputs, batch)")
            args, kwargs, target = (raw[0],), {}, raw[1]
        else:
            inputs = inputs_of(raw)
            args, kwargs = ((), dict(inputs)) if isinstance(inputs, Mapping) else \
                ((tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), {})
            target = raw
        first = _first_tensor(args) if args else _first_tensor(kwargs)
        if first is None:
            raise ValueError("a batch has no tensor input for the model")
        yield Batch(args, kwargs, target, int(first.shape[0]) if first.ndim else 1)


def iter_batches(data: DataLike, batch_size: int = 1024, dtype: torch.dtype | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches in a fixed order, floating tensors cast to ``dtype`` (for (inputs, targets) data)."""
    for b in batches(data, batch_size, dtype):
        yield b.args[0], b.target


def count_examples(data: DataLike) -> int:
    """Number of examples, without loading a DataLoader's data into memory."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return len(data[0])
    if isinstance(data, Mapping):
        return len(next(iter(data.values())))
    if isinstance(data, DataLoader):
        return len(data.dataset)
    return len(data)


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else where the model's parameters live (CPU for a model without any)."""
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextmanager
def eval_semantics(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode for the duration (BatchNorm on running statistics, Dropout off), each one's
    own flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """Attention through PyTorch's math kernel while an instrument differentiates twice.

    The fused scaled-dot-product-attention kernels (flash, memory-efficient, the fused CPU kernel) have no double
    backward, so Hessian-vector products through ``nn.MultiheadAttention`` would fail; the math kernel computes
    the same attention with ordinary differentiable ops. The transformer layers' inference fast path
    (``torch.backends.mha``) is switched off too: under ``torch.func`` transforms the parameters do not look as
    if they required gradients, and that path has no derivatives at all."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


__all__ = ["Batch", "DataLike", "batches", "convert", "iter_batches", "count_examples", "model_device",
           "eval_semantics", "twice_differentiable", "TensorDataset"]
