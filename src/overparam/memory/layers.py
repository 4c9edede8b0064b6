"""Associative-memory layers for networks: k-winners-take-all and a modern-Hopfield attractor.

- :class:`KWinners` (Ahmad & Scheinkman 2019, "How can we be so dense?"; nupic.torch ``KWinners``):
  keep exactly the k largest units of each example, zero the rest. Units are ranked after *boosting* by
  exp((k/n - duty_cycle) * boost_strength), so rarely winning units get a chance; the output keeps the
  unboosted values. The gradient reaches the winners only (the mask is a constant in the backward pass).
- :class:`HopfieldAttractor` (Ramsauer et al. 2020, "Hopfield networks is all you need"): the update
  xi <- X^T softmax(beta X xi) over stored patterns X (rows, learnable), repeated ``steps`` times. With
  well-separated patterns and large beta one step retrieves the nearest stored pattern.
"""

from __future__ import annotations

import torch
from torch import nn


class KWinners(nn.Module):
    """k-winners-take-all over the last dimension of a (batch, n) input."""

    def __init__(self, n: int, k: int, boost_strength: float = 1.0, duty_cycle_period: int = 1000,
                 k_inference: int | None = None):
        super().__init__()
        if not 1 <= k <= n:
            raise ValueError(f"k: must satisfy 1 <= k <= n = {n}, got {k}")
        if k_inference is not None and not 1 <= k_inference <= n:
            raise ValueError(f"k_inference: must satisfy 1 <= k_inference <= n = {n}, got {k_inference}")
        if boost_strength < 0 or duty_cycle_period < 1:
            raise ValueError("boost_strength must be >= 0 and duty_cycle_period >= 1")
        self.n, self.k, self.k_inference = n, k, k_inference or k
        self.boost_strength = float(boost_strength)   # decay it between epochs if wanted (nupic does)
        self.duty_cycle_period = duty_cycle_period
        self.register_buffer("duty_cycle", torch.zeros(n))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def boost(self) -> torch.Tensor:
        return torch.exp((self.k / self.n - self.duty_cycle) * self.boost_strength)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k if self.training else self.k_inference
        ranked = x.detach() * self.boost() if self.boost_strength > 0 else x.detach()
        idx = ranked.topk(k, dim=-1).indices
        return torch.zeros_like(x).scatter_(-1, idx, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n:
            raise ValueError(f"KWinners: expected last dimension {self.n}, got {tuple(x.shape)}")
        m = self.mask(x)
        if self.training:
            with torch.no_grad():
                batch = m.reshape(-1, self.n)
                self.seen += batch.shape[0]
                period = float(min(self.duty_cycle_period, int(self.seen)))
                self.duty_cycle.mul_((period - batch.shape[0]) / period).add_(batch.sum(0) / period)
        return x * m

    def extra_repr(self) -> str:
        return f"n={self.n}, k={self.k}, k_inference={self.k_inference}, boost_strength={self.boost_strength}"


class HopfieldAttractor(nn.Module):
    """Modern-Hopfield retrieval xi <- X^T softmax(beta X xi) over n_patterns learnable stored patterns."""

    def __init__(self, dim: int, n_patterns: int, beta: float = 1.0, steps: int = 1, learn_beta: bool = False,
                 patterns: torch.Tensor | None = None):
        super().__init__()
        if dim < 1 or n_patterns < 1 or steps < 1 or beta <= 0:
            raise ValueError("dim, n_patterns and steps must be >= 1 and beta > 0")
        init = patterns if patterns is not None else torch.randn(n_patterns, dim) / dim ** 0.5
        if tuple(init.shape) != (n_patterns, dim):
            raise ValueError(f"patterns: expected shape ({n_patterns}, {dim}), got {tuple(init.shape)}")
        self.patterns = nn.Parameter(init.clone().float())
        log_beta = torch.log(torch.tensor(float(beta)))
        self.log_beta = nn.Parameter(log_beta) if learn_beta else None
        if not learn_beta:
            self.register_buffer("_log_beta", log_beta)
        self.steps = steps

    @property
    def beta(self) -> torch.Tensor:
        return torch.exp(self.log_beta if self.log_beta is not None else self._log_beta)

    def attention(self, xi: torch.Tensor) -> torch.Tensor:
        """softmax(beta X xi): the weight of each stored pattern in one update, shape (batch, n_patterns)."""
        return torch.softmax(self.beta * xi @ self.patterns.T, dim=-1)

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            xi = self.attention(xi) @ self.patterns
        return xi

    def extra_repr(self) -> str:
        return f"dim={self.patterns.shape[1]}, n_patterns={self.patterns.shape[0]}, steps={self.steps}"
