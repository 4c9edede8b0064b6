"""Parallel ReLU networks and a small residual MLP, both with an optional leading replica axis.

``ParallelNet(in_dim, M, L, w)`` is the architecture of Zhang & Wang (ICLR 2023): M independent ReLU
MLPs ("subnetworks"), each with L linear layers (``in -> w -> ... -> w -> out``, so L-1 hidden layers
of width w), all reading the same input; the network's output is the sum of theirs.
``ResNet1D(in_dim, width, blocks)`` embeds the input linearly, adds ``blocks`` residual branches
``h <- h + W2 relu(W1 h + b1) + b2`` and reads the output out linearly.

Both store their parameters as stacked tensors (subnetworks / blocks along one axis) so a forward
pass is a handful of batched matmuls. ``replicas=R`` adds a leading axis of R independent networks
(each with its own initialization) that train together: ``forward(x)`` then returns ``(R, N, out)``.
Parameters whose name ends in ``weight`` are the weights (weight decay applies to them); those
ending in ``bias`` are the biases (:func:`decay_groups` splits them for an optimizer).

Activity: a subnetwork (or residual branch) is *active* when its output varies over the inputs;
see :func:`active_mask` for the exact rule and its tolerance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: default relative tolerance of :func:`active_mask`
ACTIVE_RTOL = 1e-3


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None) -> torch.Tensor:
    """nn.Linear's default initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class ParallelNet(nn.Module):
    """Sum of ``M`` ReLU MLPs of depth ``L`` (linear layers) and width ``w``, all fed the same input.

    Parameters ``layers.{l}.weight`` have shape ``(*R, M, out_l, in_l)`` and ``layers.{l}.bias``
    ``(*R, M, out_l)``, where ``*R`` is ``(replicas,)`` or empty. ``M=1`` is a vanilla MLP with
    ``L-1`` hidden layers of width ``w``.
    """

    def __init__(self, in_dim: int, M: int, L: int, w: int, out_dim: int = 1, replicas: int | None = None,
                 seed: int | None = None):
        super().__init__()
        if min(in_dim, M, w, out_dim) < 1 or L < 2:
            raise ValueError(f"need in_dim, M, w, out_dim >= 1 and L >= 2, got {in_dim}, {M}, {w}, {out_dim}, L={L}")
        if replicas is not None and replicas < 1:
            raise ValueError(f"replicas must be >= 1 or None, got {replicas}")
        self.in_dim, self.M, self.L, self.w, self.out_dim, self.replicas = in_dim, M, L, w, out_dim, replicas
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        lead = (replicas,) if replicas is not None else ()
        sizes = [in_dim] + [w] * (L - 1) + [out_dim]
        self.layers = nn.ModuleList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            layer = nn.Module()
            layer.weight = nn.Parameter(_uniform((*lead, M, b, a), a, gen))
            layer.bias = nn.Parameter(_uniform((*lead, M, b), a, gen))
            self.layers.append(layer)

    def subnetwork_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each subnetwork's output: x (N, in) -> (*R, N, M, out)."""
        h = x.reshape(len(x), -1).T                              # (in, N), broadcast over (*R, M)
        for i, layer in enumerate(self.layers):
            h = layer.weight @ h + layer.bias.unsqueeze(-1)      # (*R, M, out_l, N)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.permute(*range(h.dim() - 3), -1, -3, -2)       # (*R, N, M, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The summed output: x (N, in) -> (*R, N, out)."""
        return self.subnetwork_outputs(x).sum(-2)

    def subnetwork(self, m: int, replica: int | None = None) -> nn.Sequential:
        """Subnetwork ``m`` (of replica ``replica``) as an explicit ``nn.Sequential`` of Linear/ReLU."""
        mods: list[nn.Module] = []
        for i, layer in enumerate(self.layers):
            W, b = (layer.weight, layer.bias) if replica is None else (layer.weight[replica], layer.bias[replica])
            lin = nn.Linear(W.shape[-1], W.shape[-2])
            with torch.no_grad():
                lin.weight.copy_(W[m])
                lin.bias.copy_(b[m])
            mods.append(lin)
            if i < len(self.layers) - 1:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)

    def parameters_per_subnetwork(self) -> int:
        sizes = [self.in_dim] + [self.w] * (self.L - 1) + [self.out_dim]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


class ResNet1D(nn.Module):
    """``x -> h0 = A x + a -> h_{b+1} = h_b + W2_b relu(W1_b h_b + c1_b) + c2_b -> y = B h + d``.

    Residual branches are stacked: ``blocks.weight1`` has shape ``(*R, blocks, width, width)``.
    """

    def __init__(self, in_dim: int, width: int, blocks: int, out_dim: int = 1, replicas: int | None = None,
                 seed: int | None = None):
        super().__init__()
        if min(in_dim, width, blocks, out_dim) < 1:
            raise ValueError(f"need in_dim, width, blocks, out_dim >= 1, got {in_dim}, {width}, {blocks}, {out_dim}")
        self.in_dim, self.width, self.n_blocks, self.out_dim, self.replicas = in_dim, width, blocks, out_dim, replicas
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        lead = (replicas,) if replicas is not None else ()
        self.embed = nn.Module()
        self.embed.weight = nn.Parameter(_uniform((*lead, width, in_dim), in_dim, gen))
        self.embed.bias = nn.Parameter(_uniform((*lead, width), in_dim, gen))
        self.blocks = nn.Module()
        self.blocks.weight1 = nn.Parameter(_uniform((*lead, blocks, width, width), width, gen))
        self.blocks.bias1 = nn.Parameter(_uniform((*lead, blocks, width), width, gen))
        self.blocks.weight2 = nn.Parameter(_uniform((*lead, blocks, width, width), width, gen))
        self.blocks.bias2 = nn.Parameter(_uniform((*lead, blocks, width), width, gen))
        self.readout = nn.Module()
        self.readout.weight = nn.Parameter(_uniform((*lead, out_dim, width), width, gen))
        self.readout.bias = nn.Parameter(_uniform((*lead, out_dim), width, gen))

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(output (*R, N, out), branch outputs [(*R, width, N)] * blocks, final stream (*R, width, N))."""
        x = x.reshape(len(x), -1)
        h = self.embed.weight @ x.T + self.embed.bias.unsqueeze(-1)       # (*R, width, N)
        branches = []
        for b in range(self.n_blocks):
            W1, c1 = self.blocks.weight1[..., b, :, :], self.blocks.bias1[..., b, :]
            W2, c2 = self.blocks.weight2[..., b, :, :], self.blocks.bias2[..., b, :]
            r = W2 @ torch.relu(W1 @ h + c1.unsqueeze(-1)) + c2.unsqueeze(-1)
            branches.append(r)
            h = h + r
        out = self.readout.weight @ h + self.readout.bias.unsqueeze(-1)  # (*R, out, N)
        return out.transpose(-1, -2), branches, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) -> (*R, N, out)."""
        return self._run(x)[0]

    def branch_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each residual branch's output r_b(h_b): (*R, N, blocks, width)."""
        return _stack_branches(self._run(x)[1])


def _stack_branches(branches: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(branches, -3).permute(*range(branches[0].dim() - 2), -1, -3, -2)


def decay_groups(model: nn.Module, weight_decay) -> list[dict]:
    """Optimizer parameter groups: weight decay on parameters named ``*weight*``, none on ``*bias*``."""
    weights = [p for n, p in model.named_parameters() if "weight" in n.rsplit(".", 1)[-1]]
    biases = [p for n, p in model.named_parameters() if "bias" in n.rsplit(".", 1)[-1]]
    if len(weights) + len(biases) != len(list(model.parameters())):
        raise ValueError("every parameter must be named *weight* or *bias*")
    return [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]


def weight_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of squared weights (biases excluded), per replica: shape ``(R,)`` or a scalar."""
    total = 0.0
    for n, p in model.named_parameters():
        if "weight" in n.rsplit(".", 1)[-1]:
            lead = 1 if getattr(model, "replicas", None) is not None else 0
            total = total + p.pow(2).reshape(*p.shape[:lead], -1).sum(-1)
    return total


def output_variation(outputs: torch.Tensor) -> torch.Tensor:
    """Root-mean-square deviation from the mean over inputs: outputs (*R, N, K, d) -> (*R, K).

    Zero exactly when a unit's output is constant over the N inputs.
    """
    centered = outputs - outputs.mean(-3, keepdim=True)
    return centered.pow(2).sum(-1).mean(-2).sqrt()


def active_mask(variation: torch.Tensor, total_variation: torch.Tensor | None = None,
                rtol: float = ACTIVE_RTOL, reference: float | None = None) -> torch.Tensor:
    """Which units are active: variation (*R, K) -> bool (*R, K).

    Unit k is active when its output's RMS variation over the inputs exceeds ``rtol`` times a scale:
    the largest of the whole network's output variation (``total_variation``, shape (*R,)), the
    largest unit's variation and ``reference`` (a fixed scale such as the standard deviation of the
    training targets, so that a network whose every unit has collapsed to near-constant output counts
    none active). A zeroed or dead (constant-output) unit has variation 0 and is never active.
    """
    scale = variation.amax(-1)
    if total_variation is not None:
        scale = torch.maximum(scale, total_variation)
    if reference is not None:
        scale = torch.clamp(scale, min=float(reference))
    return (variation > rtol * scale.unsqueeze(-1)) & (variation > 0)


@torch.no_grad()
def active_subnetworks(net: ParallelNet, x: torch.Tensor, rtol: float = ACTIVE_RTOL,
                       reference: float | None = None) -> torch.Tensor:
    """Number of active subnetworks of a ParallelNet over inputs x: a scalar or (R,) int tensor."""
    sub = net.subnetwork_outputs(x)                            # (*R, N, M, out)
    total = output_variation(sub.sum(-2, keepdim=True)).squeeze(-1)
    return active_mask(output_variation(sub), total, rtol, reference).sum(-1)


@torch.no_grad()
def active_blocks(net: ResNet1D, x: torch.Tensor, rtol: float = ACTIVE_RTOL,
                  reference: float | None = None) -> torch.Tensor:
    """Number of residual branches of a ResNet1D whose output varies over x: the rule of
    :func:`active_mask`, with the final residual stream's variation as the network-level scale."""
    _, branches, stream = net._run(x)
    br = _stack_branches(branches)                             # (*R, N, blocks, width)
    total = output_variation(stream.transpose(-1, -2).unsqueeze(-2)).squeeze(-1)
    return active_mask(output_variation(br), total, rtol, reference).sum(-1)
