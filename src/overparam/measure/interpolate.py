"""Loss and error along the straight line between two solutions (Goodfellow et al. 2014; Frankle et al. 2020).

``interpolate(model_a, model_b, loss_fn, data, steps=21, extend=0.5)`` evaluates
``theta(alpha) = (1 - alpha) theta_a + alpha theta_b`` for alpha on a uniform grid over
``[-extend, 1 + extend]`` that contains 0 and 1 exactly, and reports the barrier of Frankle et al. 2020
(arXiv 1912.05671, sec. 3): ``sup_{alpha in [0, 1]} L(alpha) - ((1 - alpha) L(0) + alpha L(1))``, for the loss
and for the error (their "instability" is the error barrier), taken over the grid points in [0, 1].

Buffers: floating-point buffers (BatchNorm running mean/var) are interpolated like the weights
(``bn="interpolate"``, the default); integer buffers (``num_batches_tracked``) are taken from model_a. The
running statistics of an interpolated network are not those of its own activations (the variance collapses
between two networks; Jordan et al. 2022, REPAIR), which inflates barriers; ``bn="recompute"`` re-estimates them
at every alpha with one pass over the data in train mode (cumulative averages), then evaluates in eval mode.
Neither model is modified.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.measure.data import iter_batches
from overparam.measure.sharpness import FlatLoss

BN_CHOICES = ("interpolate", "recompute")


@dataclass
class Interpolation:
    alphas: np.ndarray          # the grid, ascending, containing 0 and 1
    loss: np.ndarray            # L(alpha)
    error: np.ndarray           # error rate at alpha (nan when the task is not classification)
    loss_barrier: float         # Frankle et al.'s sup over [0, 1] of L(alpha) minus the chord of the endpoints
    error_barrier: float
    barrier_alpha: float        # where the loss barrier is reached
    distance: float             # ||theta_b - theta_a||
    bn: str
    n_loss_evals: int
    seconds: float

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
        ax.plot(self.alphas, self.loss, "-o", ms=3, color="C0", label="loss")
        ax.set_xlabel("alpha  (0 = model a, 1 = model b)")
        ax.set_ylabel("loss", color="C0")
        for a in (0.0, 1.0):
            ax.axvline(a, color="k", lw=0.5, ls=":")
        if not np.all(np.isnan(self.error)):
            ax2 = ax.twinx()
            ax2.plot(self.alphas, self.error, "-s", ms=3, color="C1", label="error")
            ax2.set_ylabel("error", color="C1")
        ax.set_title(f"linear interpolation: loss barrier {self.loss_barrier:.3g}, "
                     f"error barrier {self.error_barrier:.3g}", fontsize=9)
        fig.tight_layout()
        return fig


def _grid(steps: int, extend: float) -> np.ndarray:
    h = 1.0 / (steps - 1)
    n_out = int(round(extend / h))
    return np.arange(-n_out, steps + n_out) * h


def _barrier(alphas: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    i0, i1 = int(np.argmin(np.abs(alphas))), int(np.argmin(np.abs(alphas - 1)))
    a, v = alphas[i0:i1 + 1], values[i0:i1 + 1]
    gap = v - ((1 - a) * values[i0] + a * values[i1])
    if np.all(np.isnan(gap)):
        return float("nan"), float("nan")
    j = int(np.nanargmax(gap))
    return float(gap[j]), float(a[j])


def _recompute_bn(model: nn.Module, state: dict, data, batch_size: int, dtype: torch.dtype) -> dict:
    """Running statistics of the network with parameters ``state``: one train-mode pass, cumulative average."""
    net = copy.deepcopy(model).to(dtype)
    net.load_state_dict(state, strict=False)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for x, _ in iter_batches(data, batch_size, dtype):
            net(x)
    return {n: b.detach() for n, b in net.named_buffers()}


def interpolate(model_a: nn.Module, model_b: nn.Module, loss_fn, data, steps: int = 21, extend: float = 0.5,
                bn: str = "interpolate", dtype: torch.dtype = torch.float64, batch_size: int = 2048,
                num_threads: int | None = None) -> Interpolation:
    """Loss and error on the line through two models of the same architecture, evaluated in eval mode.

    ``steps``: grid points in [0, 1] (both ends included); the grid continues with the same spacing for
    ``extend`` on each side (``extend=0`` stays between the models).
    """
    if steps < 2:
        raise ValueError(f"steps: must be >= 2, got {steps}")
    if extend < 0:
        raise ValueError(f"extend: must be >= 0, got {extend}")
    if bn not in BN_CHOICES:
        raise ValueError(f"bn: {bn!r} is not allowed; choose one of: {', '.join(BN_CHOICES)}")
    fa = FlatLoss(model_a, loss_fn, data, dtype=dtype, batch_size=batch_size, mode="eval", num_threads=num_threads)
    fb = FlatLoss(model_b, loss_fn, data, dtype=dtype, batch_size=batch_size, mode="eval")
    if fa.names != fb.names or fa.shapes != fb.shapes:
        diff = next(((n, s, m, t) for n, s, m, t in zip(fa.names, fa.shapes, fb.names, fb.shapes)
                     if n != m or s != t), None)
        raise ValueError(f"model_a and model_b differ in their parameters (first difference: {diff}; "
                         f"{len(fa.names)} vs {len(fb.names)} tensors)")
    if set(fa.buffers) != set(fb.buffers):
        raise ValueError("model_a and model_b differ in their buffers: "
                         f"{sorted(set(fa.buffers) ^ set(fb.buffers))}")
    t0 = time.perf_counter()
    alphas = _grid(steps, extend)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model_a.modules())
    loss, error = np.empty(len(alphas)), np.empty(len(alphas))
    for i, a in enumerate(alphas):
        theta = (1 - a) * fa.w0 + a * fb.w0
        bufs = {n: ((1 - a) * b + a * fb.buffers[n]) if torch.is_floating_point(b) else b
                for n, b in fa.buffers.items()}
        if bn == "recompute" and has_bn:
            state = {**fa.unflatten(theta), **bufs}
            bufs = {**bufs, **_recompute_bn(model_a, state, data, batch_size, dtype)}
        loss[i], error[i] = fa(theta, buffers=bufs, error=True)
    lb, la = _barrier(alphas, loss)
    eb, _ = _barrier(alphas, error)
    return Interpolation(alphas=alphas, loss=loss, error=error, loss_barrier=lb, error_barrier=eb,
                         barrier_alpha=la, distance=float(torch.linalg.norm(fb.w0 - fa.w0)), bn=bn,
                         n_loss_evals=fa.n_evals, seconds=time.perf_counter() - t0)


__all__ = ["Interpolation", "interpolate"]
