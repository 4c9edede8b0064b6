"""Fully connected networks: ``in -> widths... -> out`` with one activation between layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
    "softplus": nn.Softplus,
}


class MLP(nn.Module):
    """A multilayer perceptron; ``MLP(40, [h, h], 10)`` is the MNIST-1D double-descent net 40-h-h-10."""

    def __init__(self, in_dim: int, widths: Sequence[int], out_dim: int, activation: str = "relu",
                 bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if in_dim < 1 or out_dim < 1 or any(int(w) < 1 for w in widths):
            raise ValueError(f"layer sizes must be >= 1, got in={in_dim}, widths={list(widths)}, out={out_dim}")
        self.in_dim, self.widths, self.out_dim = int(in_dim), [int(w) for w in widths], int(out_dim)
        self.activation, self.bias = activation, bias
        sizes = [self.in_dim, *self.widths, self.out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def mlp_parameter_count(in_dim: int, widths: Sequence[int], out_dim: int, bias: bool = True) -> int:
    """Closed form of ``count_parameters(MLP(...))``: sum of a*b (+ b) over consecutive layer sizes."""
    sizes = [in_dim, *widths, out_dim]
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))


def seeded(build, seed: int) -> nn.Module:
    """Build a module with its initial weights drawn from ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
