"""Sums of K Gaussian bumps on a line, with learnable centres, widths and amplitudes.

``GaussianSum`` holds S *independent* models at once as (S, K) parameter tensors:

    f_s(x) = sum_k a_sk * exp(-(x - c_sk)^2 / (2 w_sk^2)),     w_sk = exp(log_width_sk)

Summing the S per-model losses and taking one step of an elementwise optimizer (SGD, momentum, Adam)
updates each model exactly as if it were trained alone: the gradient of the sum with respect to model
s's parameters is the gradient of model s's own loss. This is the batch used by the spawn-vs-slide
study (tests check batch == one by one).

Closed forms for the toy (one Gaussian fitting one Gaussian target g(x) = A exp(-(x-mu)^2/(2 sigma^2))):
:func:`centre_gradient` is dL/dc for the grid loss L = mean_i (f(x_i) - g(x_i))^2, and
:func:`line_centre_gradient` is dL/dc for L = integral over the real line of (f - g)^2, which is

    dL/dc = -2 a A sqrt(2 pi) sigma w / sqrt(v) * (mu - c) / v * exp(-(c - mu)^2 / (2 v)),   v = sigma^2 + w^2

-- it decays like a Gaussian in the distance |c - mu|: a bump far from the target feels no pull.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def gaussian(x: torch.Tensor, centre, width, amplitude) -> torch.Tensor:
    """amplitude * exp(-(x - centre)^2 / (2 width^2)), broadcasting."""
    return amplitude * torch.exp(-(x - centre) ** 2 / (2 * width ** 2))


class GaussianSum(nn.Module):
    """S independent sums of K Gaussians; ``forward(x)`` maps x (M,) or (M, 1) to (S, M)."""

    def __init__(self, centres: torch.Tensor, widths: torch.Tensor, amplitudes: torch.Tensor):
        super().__init__()
        centres, widths, amplitudes = (torch.as_tensor(t) for t in (centres, widths, amplitudes))
        if centres.ndim != 2 or centres.shape != widths.shape or centres.shape != amplitudes.shape:
            raise ValueError(f"centres, widths, amplitudes must share one (S, K) shape, got "
                             f"{tuple(centres.shape)}, {tuple(widths.shape)}, {tuple(amplitudes.shape)}")
        if (widths <= 0).any():
            raise ValueError("widths must be > 0")
        self.centre = nn.Parameter(centres.clone())
        self.log_width = nn.Parameter(widths.log())
        self.amplitude = nn.Parameter(amplitudes.clone())

    @classmethod
    def random(cls, S: int, K: int, interval: tuple[float, float], width: float, amplitude: float,
               seed: int, dtype: torch.dtype = torch.float64) -> "GaussianSum":
        """Centres uniform on the interval (one generator for the whole batch), equal widths and amplitudes."""
        lo, hi = interval
        g = torch.Generator().manual_seed(seed)
        centres = lo + (hi - lo) * torch.rand(S, K, generator=g, dtype=dtype)
        return cls(centres, torch.full((S, K), width, dtype=dtype), torch.full((S, K), amplitude, dtype=dtype))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.centre.shape)

    @property
    def width(self) -> torch.Tensor:
        return self.log_width.exp()

    def components(self, x: torch.Tensor) -> torch.Tensor:
        """Each bump on x: (S, K, M)."""
        x = x.reshape(1, 1, -1).to(self.centre.dtype)
        return gaussian(x, self.centre.unsqueeze(-1), self.width.unsqueeze(-1), self.amplitude.unsqueeze(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.components(x).sum(1)

    def select(self, index) -> "GaussianSum":
        """A new GaussianSum holding the models ``index`` (int, slice or index tensor), detached copies."""
        sl = (lambda t: t.detach()[index:index + 1]) if isinstance(index, int) else (lambda t: t.detach()[index])
        return GaussianSum(sl(self.centre), sl(self.width), sl(self.amplitude))


def grid_loss(model: GaussianSum, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each model on the grid x: (S,)."""
    return ((model(x) - target.reshape(1, -1)) ** 2).mean(1)


@torch.no_grad()
def centre_gradient(model: GaussianSum, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Closed-form d grid_loss / d centre, (S, K): (2/M) sum_i r_i a_k phi_k(x_i) (x_i - c_k) / w_k^2."""
    x = x.reshape(1, 1, -1).to(model.centre.dtype)
    phi = model.components(x)                                   # (S, K, M), amplitude included
    r = model(x) - target.reshape(1, -1).to(phi.dtype)          # (S, M)
    dphi_dc = phi * (x - model.centre.unsqueeze(-1)) / model.width.unsqueeze(-1) ** 2
    return 2 * (r.unsqueeze(1) * dphi_dc).mean(-1)


def line_centre_gradient(c: float, w: float, a: float, mu: float, sigma: float, A: float) -> float:
    """d/dc of the integral over the real line of (a phi_c,w - A phi_mu,sigma)^2 (one bump fitting one bump)."""
    v = sigma ** 2 + w ** 2
    return (-2 * a * A * math.sqrt(2 * math.pi) * sigma * w / math.sqrt(v) * (mu - c) / v
            * math.exp(-(c - mu) ** 2 / (2 * v)))
