"""Small networks with associative-memory parts (k-WTA, ternary responses, a Hopfield attractor) and fixed
sparse-weight masks. Training and the noise-robustness score live with the studies (overparam.studies.am_common).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from overparam.memory.layers import HopfieldAttractor, KWinners
from overparam.models import count_parameters

def ternarize(a: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Forward: sign(a) where |a| > threshold, else 0 (responses in {0, +-1}). Backward: straight-through
    with the gradient of clamp(a, -1.5, 1.5), so units far outside stop receiving gradient."""
    soft = torch.clamp(a, -1.5, 1.5)
    hard = torch.sign(a) * (a.abs() > threshold).to(a.dtype)
    return soft + (hard - soft).detach()


class SparseResponseMLP(nn.Module):
    """MLP whose hidden responses are ternary {0, +-1} (straight-through); pre-activations are recorded so an
    l1 penalty on them (:func:`sparsity_penalty`) makes most responses 0."""

    def __init__(self, in_dim: int, widths: list[int], out_dim: int, threshold: float = 0.5):
        super().__init__()
        sizes = [in_dim, *widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], out_dim)
        self.threshold = threshold
        self.preacts: list[torch.Tensor] = []

    def forward(self, x):
        self.preacts = []
        for layer in self.hidden:
            a = layer(x)
            self.preacts.append(a)
            x = ternarize(a, self.threshold)
        return self.out(x)

    def responses(self, x) -> list[torch.Tensor]:
        self.forward(x)
        return [ternarize(a, self.threshold) for a in self.preacts]


def sparsity_penalty(preacts: list[torch.Tensor], l1: float) -> torch.Tensor:
    """l1 * mean |a| over the hidden pre-activations: pushes most of them under the threshold (response 0)."""
    return l1 * sum(a.abs().mean() for a in preacts) / max(len(preacts), 1)


class KWinnersMLP(nn.Module):
    """in -> [Linear -> k-WTA] x depth -> out: ReLU replaced by k-winners-take-all (no extra parameters)."""

    def __init__(self, in_dim: int, widths: list[int], out_dim: int, density: float, boost_strength: float = 1.5):
        super().__init__()
        sizes = [in_dim, *widths]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), KWinners(b, max(1, round(density * b)), boost_strength=boost_strength)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(sizes[-1], out_dim)

    def forward(self, x):
        return self.out(self.body(x))


class AttractorMLP(nn.Module):
    """AM -> separator -> attractor -> read-out: Linear(in, h) -> ReLU -> Hopfield(h, P) -> Linear(h, out).

    With P = h + 1 stored patterns (and beta fixed) it has exactly the parameters of the MLP in-h-h-out; the
    effective sharpness is still learned through the length of the stored patterns.
    """

    def __init__(self, in_dim: int, width: int, out_dim: int, n_patterns: int | None = None, beta: float = 1.0,
                 steps: int = 1):
        super().__init__()
        self.am = nn.Linear(in_dim, width)
        self.attractor = HopfieldAttractor(width, n_patterns or width + 1, beta=beta, steps=steps)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x):
        return self.out(self.attractor(torch.relu(self.am(x))))


def random_weight_masks(model: nn.Module, density: float, seed: int, skip_last: bool = True) -> dict[str, torch.Tensor]:
    """Fixed random masks keeping exactly round(density * numel) entries of every weight matrix (the read-out
    layer excluded when skip_last): the sparse weights of Ahmad & Scheinkman 2019."""
    gen = torch.Generator().manual_seed(seed)
    names = [n for n, p in model.named_parameters() if p.dim() == 2]
    if skip_last:
        names = names[:-1]
    masks = {}
    params = dict(model.named_parameters())
    for n in names:
        p = params[n]
        keep = int(round(density * p.numel()))
        flat = torch.zeros(p.numel())
        flat[torch.randperm(p.numel(), generator=gen)[:keep]] = 1.0
        masks[n] = flat.reshape(p.shape)
    return masks


def mask_applier(masks: dict[str, torch.Tensor]) -> Callable[[nn.Module], None]:
    """A callable that zeroes the masked weights in place (use it once, then as fit(after_step=...))."""
    @torch.no_grad()
    def apply(model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return apply


def nonzero_parameters(model: nn.Module) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def count(model: nn.Module) -> int:
    return count_parameters(model)
