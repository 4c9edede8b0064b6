"""1-D and 2-D slices of the loss landscape around a model (Li et al. 2018, "Visualizing the loss landscape of
neural nets", arXiv 1712.09913; code tomgoldstein/loss-landscape).

``landscape(model, loss_fn, data, dims=2, directions="filter-normalized")`` evaluates
``L(theta + a d1)`` (1-D) or ``L(theta + a d1 + b d2)`` (2-D) on a ``steps`` (x ``steps``) grid over
``[-span, span]``.

Directions:

* ``"filter-normalized"`` (Li et al. sec. 4): a Gaussian direction in which every filter -- a row of a Linear
  weight, an output channel of a Conv weight, i.e. each slice along the first axis of a tensor with >= 2 axes --
  is rescaled to the norm of the matching filter of the weights, so the plot is comparable across networks
  whose weights differ in scale (ReLU and BatchNorm make the loss invariant to such scales).
* ``"random"``: the raw Gaussian direction (no rescaling).
* given: a sequence of ``dims`` directions, each a flat tensor/array of the parameter count, or a dict
  ``{parameter name: tensor}`` (missing names are zero). Used as given.

``ignore="biasbn"`` (their ``--xignore biasbn``, the default) zeroes the direction on every parameter with at
most one axis (biases, BatchNorm weight and bias); ``ignore=None`` instead sets it to the parameter itself, as
their code does. Buffers (BatchNorm running statistics) are held fixed, and the model is evaluated in eval mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.measure.sharpness import FlatLoss

DIRECTIONS = ("filter-normalized", "random")
IGNORES = ("biasbn", None)


@dataclass
class Landscape:
    dims: int
    alphas: np.ndarray              # coordinates along the first direction
    betas: np.ndarray | None        # along the second (2-D only)
    loss: np.ndarray                # (steps,) or (steps, steps) indexed [alpha, beta]
    error: np.ndarray               # same shape; nan when the task is not classification
    center_loss: float              # L(theta), the model's own loss
    directions: list                # flat float64 numpy arrays, one per dimension
    kind: str                       # "filter-normalized", "random" or "given"
    n_loss_evals: int
    seconds: float

    def plot(self, ax=None, levels: int = 30, log: bool = False):
        import matplotlib.pyplot as plt

        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4))
        if self.dims == 1:
            ax.plot(self.alphas, self.loss, "-", color="C0")
            ax.set_xlabel("alpha")
            ax.set_ylabel("loss", color="C0")
            if not np.all(np.isnan(self.error)):
                ax2 = ax.twinx()
                ax2.plot(self.alphas, self.error, "--", color="C1")
                ax2.set_ylabel("error", color="C1")
        else:
            z = np.log10(np.maximum(self.loss, 1e-12)) if log else self.loss
            cs = ax.contour(self.alphas, self.betas, z.T, levels=levels, cmap="viridis")
            ax.clabel(cs, inline=True, fontsize=6, fmt="%.2g")
            ax.plot([0], [0], "k+", ms=8)
            ax.set_xlabel("alpha")
            ax.set_ylabel("beta")
            ax.set_aspect("equal")
        ax.set_title(f"{self.dims}-D loss landscape ({self.kind} directions); center loss {self.center_loss:.3g}",
                     fontsize=9)
        fig.tight_layout()
        return fig


def _param_pieces(f: FlatLoss, flat: torch.Tensor) -> list[torch.Tensor]:
    return [t.view(s) for t, s in zip(torch.split(flat, f.sizes), f.shapes)]


def filter_normalized_direction(f: FlatLoss, gen: torch.Generator, normalize: bool = True,
                                ignore: str | None = "biasbn") -> torch.Tensor:
    """One Gaussian direction (flat), filter-normalized against the weights ``f.w0`` when ``normalize``."""
    pieces = []
    for w in _param_pieces(f, f.w0):
        d = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w.dtype)
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
        elif normalize:
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            wn = w.reshape(w.shape[0], -1).norm(dim=1)
            d = d * (wn / (dn + 1e-10)).reshape((-1,) + (1,) * (d.dim() - 1))
        pieces.append(d.reshape(-1))
    return torch.cat(pieces)


def _given(f: FlatLoss, d) -> torch.Tensor:
    if isinstance(d, Mapping):
        unknown = sorted(set(d) - set(f.names))
        if unknown:
            raise ValueError(f"directions: unknown parameter names {unknown}; the model's are {f.names}")
        out = []
        for n, s in zip(f.names, f.shapes):
            t = torch.as_tensor(d[n], dtype=f.dtype) if n in d else torch.zeros(s, dtype=f.dtype)
            if tuple(t.shape) != s:
                raise ValueError(f"directions: '{n}' has shape {tuple(t.shape)}, the parameter has {s}")
            out.append(t.reshape(-1))
        return torch.cat(out)
    t = torch.as_tensor(np.asarray(d) if not torch.is_tensor(d) else d, dtype=f.dtype).reshape(-1)
    if t.numel() != f.dim:
        raise ValueError(f"directions: a flat direction needs {f.dim} entries (the parameter count), got {t.numel()}")
    return t


def landscape(model: nn.Module, loss_fn, data, dims: int = 1, directions="filter-normalized", span: float = 1.0,
              steps: int = 21, seed: int = 0, ignore: str | None = "biasbn", dtype: torch.dtype = torch.float64,
              batch_size: int = 2048, num_threads: int | None = None) -> Landscape:
    """Loss and error on a 1-D line or 2-D plane through the model's weights (see the module docstring)."""
    if dims not in (1, 2):
        raise ValueError(f"dims: must be 1 or 2, got {dims}")
    if ignore not in IGNORES:
        raise ValueError(f"ignore: {ignore!r} is not allowed; choose 'biasbn' or None")
    if steps < 2:
        raise ValueError(f"steps: must be >= 2, got {steps}")
    if not span > 0:
        raise ValueError(f"span: must be > 0, got {span}")
    f = FlatLoss(model, loss_fn, data, dtype=dtype, batch_size=batch_size, mode="eval", num_threads=num_threads)
    t0 = time.perf_counter()
    if isinstance(directions, str):
        if directions not in DIRECTIONS:
            raise ValueError(f"directions: {directions!r} is not allowed; choose one of: {', '.join(DIRECTIONS)}, "
                             f"or pass {dims} direction(s)")
        gen = torch.Generator().manual_seed(seed)
        dirs = [filter_normalized_direction(f, gen, directions == "filter-normalized", ignore) for _ in range(dims)]
        kind = directions
    else:
        if isinstance(directions, (torch.Tensor, np.ndarray, Mapping)) or not isinstance(directions, Sequence):
            directions = [directions]
        if len(directions) != dims:
            raise ValueError(f"directions: dims={dims} needs {dims} direction(s), got {len(directions)}")
        dirs = [_given(f, d) for d in directions]
        kind = "given"
    alphas = np.linspace(-span, span, steps)
    betas = np.linspace(-span, span, steps) if dims == 2 else None
    shape = (steps,) if dims == 1 else (steps, steps)
    loss, error = np.empty(shape), np.empty(shape)
    for idx in np.ndindex(*shape):
        theta = f.w0 + alphas[idx[0]] * dirs[0]
        if dims == 2:
            theta = theta + betas[idx[1]] * dirs[1]
        loss[idx], error[idx] = f(theta, error=True)
    n_grid = f.n_evals
    center = f(f.w0)
    return Landscape(dims=dims, alphas=alphas, betas=betas, loss=loss, error=error, center_loss=center,
                     directions=[d.to(torch.float64).numpy() for d in dirs], kind=kind, n_loss_evals=n_grid + 1,
                     seconds=time.perf_counter() - t0)


__all__ = ["Landscape", "landscape", "filter_normalized_direction"]
