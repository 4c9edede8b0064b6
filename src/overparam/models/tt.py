"""Tensor-train (TT-matrix) linear layers (Novikov et al. 2015, "Tensorizing neural networks").

A dense weight ``W`` of shape ``(N, M)`` with ``N = n_1 ... n_d`` and ``M = m_1 ... m_d`` is represented by ``d``
cores ``G_k`` of shape ``(r_{k-1}, n_k, m_k, r_k)`` with ``r_0 = r_d = 1``::

    W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ G_2[:, i_2, j_2, :] @ ... @ G_d[:, i_d, j_d, :]

Row and column multi-indices are row-major (``i_1`` most significant), i.e. ``x.reshape(B, n_1, ..., n_d)``.
:class:`TTLinear` computes ``y = x W + b`` by the fastest of several contractions for its shapes, ranks and batch
(one core at a time, merged groups of cores, opt_einsum's path, or rebuilding ``W`` for one GEMM; see
:mod:`overparam.models.tt_contract`); the standard one-core-at-a-time count is :meth:`TTLinear.flops`.
:meth:`TTLinear.from_linear` compresses an ``nn.Linear`` by TT-SVD (Oseledets 2011), implemented here
(:func:`tt_svd_matrix`) rather than taken from TensorLy because the study and the tests need the discarded singular
values (the error bound) and exact control of the ranks; tests check it against
``tensorly.decomposition.tensor_train_matrix``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from overparam.models.tt_contract import Plan, check_contraction, choose_plan, merge_cores, tt_matmul

INITS = ("linear", "he", "xavier")

__all__ = ["TTLinear", "factorize", "tt_flops", "tt_matmul", "tt_svd_matrix", "tt_to_matrix"]


def factorize(n: int, d: int) -> list[int]:
    """Split ``n`` into ``d`` integer modes whose product is ``n``, as balanced as possible.

    Among all ordered factorizations into ``d`` factors, picks the one with the smallest largest factor (ties: the
    smallest sum of factors), returned in non-increasing order, e.g. ``factorize(1024, 4) == [8, 8, 4, 4]``,
    ``factorize(40, 2) == [8, 5]``. A prime ``n`` gives ``[n, 1, ..., 1]``.
    """
    n, d = int(n), int(d)
    if n < 1 or d < 1:
        raise ValueError(f"factorize needs n >= 1 and d >= 1, got n={n}, d={d}")
    divisors = [k for k in range(1, n + 1) if n % k == 0] if n <= 10**6 else None
    if divisors is None:
        raise ValueError(f"factorize: n={n} is too large (max 10**6)")
    best: tuple | None = None

    def search(rest: int, left: int, upper: int, acc: list[int]) -> None:
        nonlocal best
        if left == 1:
            if rest <= upper:
                cand = acc + [rest]
                key = (max(cand), sum(cand))
                if best is None or key < best[0]:
                    best = (key, cand)
            return
        # non-increasing factors: the next factor f <= upper and f**left >= rest
        for f in divisors:
            if f > upper or f > rest:
                break
            if rest % f or f ** left < rest:
                continue
            search(rest // f, left - 1, f, acc + [f])

    search(n, d, n, [])
    assert best is not None
    return best[1]


def _full_ranks(in_modes: Sequence[int], out_modes: Sequence[int],
                ranks: int | Sequence[int] | None) -> list[int]:
    """``[1, r_1, ..., r_{d-1}, 1]``, each internal rank clipped to its maximum (the exact TT rank bound)."""
    d = len(in_modes)
    sizes = [n * m for n, m in zip(in_modes, out_modes)]
    max_r = [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, d)]
    if ranks is None:
        inner = max_r
    elif isinstance(ranks, int):
        inner = [ranks] * (d - 1)
    else:
        ranks = [int(r) for r in ranks]
        if len(ranks) == d + 1:
            if ranks[0] != 1 or ranks[-1] != 1:
                raise ValueError(f"ranks: with d+1 entries the first and last must be 1, got {ranks}")
            ranks = ranks[1:-1]
        if len(ranks) != d - 1:
            raise ValueError(f"ranks: give an int, d-1={d - 1} internal ranks or d+1={d + 1} ranks, got {ranks}")
        inner = ranks
    if any(int(r) < 1 for r in inner):
        raise ValueError(f"ranks must be >= 1, got {list(inner)}")
    return [1] + [min(int(r), mr) for r, mr in zip(inner, max_r)] + [1]


def _check_modes(in_modes: Sequence[int], out_modes: Sequence[int]) -> tuple[list[int], list[int]]:
    in_modes, out_modes = [int(n) for n in in_modes], [int(m) for m in out_modes]
    if len(in_modes) != len(out_modes) or not in_modes:
        raise ValueError(f"in_modes and out_modes need the same length >= 1, got {in_modes} and {out_modes}")
    if any(n < 1 for n in in_modes + out_modes):
        raise ValueError(f"modes must be >= 1, got {in_modes} and {out_modes}")
    return in_modes, out_modes


def tt_flops(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int], batch: int = 1) -> int:
    """Multiply-adds of the left-to-right, one-core-at-a-time contraction (the standard TT count), bias excluded.

    Step k contracts ``(r_{k-1}, n_k)`` of the state with core k for every batch row, every already produced output
    index ``j_1..j_{k-1}`` and every not yet consumed input index ``i_{k+1}..i_d``:
    ``batch * prod(m_<k) * prod(n_>k) * r_{k-1} n_k m_k r_k``.
    """
    d = len(in_modes)
    return int(batch) * sum(math.prod(out_modes[:k]) * math.prod(in_modes[k + 1:])
                            * ranks[k] * in_modes[k] * out_modes[k] * ranks[k + 1] for k in range(d))


class TTLinear(nn.Module):
    """``y = x W + b`` with ``W`` (``prod(in_modes)`` x ``prod(out_modes)``) in tensor-train matrix format.

    ``ranks``: an int (all internal ranks), the ``d-1`` internal ranks, or the full ``d+1`` list; each internal rank
    is clipped to its exact maximum ``min(prod_{i<=k} n_i m_i, prod_{i>k} n_i m_i)``. The attribute ``ranks`` is the
    full list ``[1, r_1, ..., r_{d-1}, 1]``.

    ``init``: i.i.d. normal cores scaled so that each entry of the represented ``W`` has the variance of
    ``nn.Linear``'s default (``"linear"``: 1/(3 fan_in)), He (``"he"``: 2/fan_in) or Glorot (``"xavier"``:
    2/(fan_in+fan_out)) init: Var(W_ij) = (r_1 ... r_{d-1}) s^{2d} for core std ``s``. The bias is drawn like
    ``nn.Linear``'s (uniform +-1/sqrt(fan_in)).

    ``contraction``: how ``forward`` computes ``x W`` -- ``"auto"`` (the plan with the least predicted time for
    the batch, and for a backward pass when gradients are on; cached per shape), or one of ``"sequential"``,
    ``"grouped"``, ``"einsum"``, ``"dense"`` (the best plan of that path), or a
    :class:`~overparam.models.tt_contract.Plan`. All give the same result up to rounding.
    """

    def __init__(self, in_modes: Sequence[int], out_modes: Sequence[int], ranks: int | Sequence[int] | None,
                 bias: bool = True, init: str = "linear", contraction: str | Plan = "auto"):
        super().__init__()
        self.in_modes, self.out_modes = _check_modes(in_modes, out_modes)
        if init not in INITS:
            raise ValueError(f"init: unknown {init!r}; choose one of {', '.join(INITS)}")
        self.d = len(self.in_modes)
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        self.ranks = _full_ranks(self.in_modes, self.out_modes, ranks)
        self.init = init
        self.contraction = check_contraction(contraction)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(self.ranks[k], self.in_modes[k], self.out_modes[k], self.ranks[k + 1]))
            for k in range(self.d))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def target_variance(self) -> float:
        n, m = self.in_features, self.out_features
        return {"linear": 1.0 / (3 * n), "he": 2.0 / n, "xavier": 2.0 / (n + m)}[self.init]

    def reset_parameters(self) -> None:
        prod_r = math.prod(self.ranks[1:-1])
        std = (self.target_variance() / prod_r) ** (1.0 / (2 * self.d))
        with torch.no_grad():
            for core in self.cores:
                core.normal_(0.0, std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                self.bias.uniform_(-bound, bound)

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"TTLinear expects last dim {self.in_features}, got {tuple(x.shape)}")
        y = tt_matmul(x, list(self.cores), self.contraction)
        return y + self.bias if self.bias is not None else y

    def plan(self, batch: int, train: bool = False, input_grad: bool = False) -> Plan:
        """The contraction ``forward`` uses on ``batch`` rows (``train``: with a backward pass to the cores, and
        to the input if ``input_grad``)."""
        if isinstance(self.contraction, Plan):
            return self.contraction
        core = self.cores[0]
        return choose_plan(self.in_modes, self.out_modes, self.ranks, batch, self.contraction, train, input_grad,
                           device=core.device.type, dtype=str(core.dtype))

    # ---------------------------------------------------------- inspection
    def full_weight(self) -> torch.Tensor:
        """The dense ``(in_features, out_features)`` matrix the cores represent (tests and compression only)."""
        return tt_to_matrix(list(self.cores))

    def parameter_count(self) -> int:
        cores = sum(self.ranks[k] * self.in_modes[k] * self.out_modes[k] * self.ranks[k + 1] for k in range(self.d))
        return cores + (self.out_features if self.bias is not None else 0)

    def dense_parameter_count(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    def compression(self) -> float:
        """Dense parameters / TT parameters (bias counted on both sides)."""
        return self.dense_parameter_count() / self.parameter_count()

    def flops(self, batch: int = 1) -> int:
        """Forward multiply-adds of the one-core-at-a-time contraction (bias additions not counted, as in
        :meth:`dense_flops`); the plan ``forward`` runs may trade a few more for speed (see :meth:`plan`)."""
        return tt_flops(self.in_modes, self.out_modes, self.ranks, batch)

    def dense_flops(self, batch: int = 1) -> int:
        return int(batch) * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"bias={self.bias is not None}, params={self.parameter_count()} "
                f"({self.compression():.1f}x smaller)")

    # ---------------------------------------------------------- compression
    @classmethod
    def from_linear(cls, layer: nn.Linear, in_modes: Sequence[int], out_modes: Sequence[int],
                    ranks: int | Sequence[int] | None = None) -> "TTLinear":
        """TT-SVD of ``layer.weight.T`` (float64) truncated to ``ranks`` (``None``: exact, maximal ranks).

        The returned layer carries ``svd_tail``: per step, the sum of the discarded squared singular values; the
        Frobenius error of the weight is at most ``sqrt(sum(svd_tail))`` (Oseledets 2011, Thm. 2.2).
        """
        in_modes, out_modes = _check_modes(in_modes, out_modes)
        if math.prod(in_modes) != layer.in_features or math.prod(out_modes) != layer.out_features:
            raise ValueError(f"modes {in_modes} x {out_modes} do not match the layer "
                             f"{layer.in_features} x {layer.out_features}")
        w = layer.weight.detach().to(torch.float64).T
        cores, tail = tt_svd_matrix(w, in_modes, out_modes, ranks)
        tt = cls(in_modes, out_modes, [c.shape[-1] for c in cores[:-1]], bias=layer.bias is not None)
        tt = tt.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            for p, c in zip(tt.cores, cores):
                p.copy_(c)
            if layer.bias is not None:
                tt.bias.copy_(layer.bias.detach())
        tt.svd_tail = tail
        return tt


def tt_svd_matrix(w: torch.Tensor, in_modes: Sequence[int], out_modes: Sequence[int],
                  ranks: int | Sequence[int] | None = None) -> tuple[list[torch.Tensor], list[float]]:
    """TT-SVD (Oseledets 2011) of a ``(prod(in_modes), prod(out_modes))`` matrix in TT-matrix format.

    The matrix is reshaped to ``(n_1, ..., n_d, m_1, ..., m_d)``, permuted to ``(n_1 m_1, ..., n_d m_d)`` and split
    by successive truncated SVDs, left to right. Returns the cores ``(r_{k-1}, n_k, m_k, r_k)`` in ``w``'s dtype and,
    per step, the sum of the discarded squared singular values. Ranks larger than the matrix allows shrink to the
    exact rank bound (never below the numerical rank of the unfolding, which is capped by it).
    """
    in_modes, out_modes = _check_modes(in_modes, out_modes)
    d = len(in_modes)
    full = _full_ranks(in_modes, out_modes, ranks)
    t = w.reshape(*in_modes, *out_modes)
    t = t.permute(*itertools.chain.from_iterable((k, d + k) for k in range(d)))
    sizes = [n * m for n, m in zip(in_modes, out_modes)]
    cores, tail = [], []
    r_prev = 1
    c = t.reshape(-1)
    for k in range(d - 1):
        c = c.reshape(r_prev * sizes[k], -1)
        u, s, vh = torch.linalg.svd(c, full_matrices=False)
        r = min(full[k + 1], s.numel())
        tail.append(float((s[r:] ** 2).sum()))
        cores.append(u[:, :r].reshape(r_prev, in_modes[k], out_modes[k], r))
        c = s[:r, None] * vh[:r]
        r_prev = r
    cores.append(c.reshape(r_prev, in_modes[-1], out_modes[-1], 1))
    return cores, tail


def tt_to_matrix(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense ``(prod n_k, prod m_k)`` matrix of TT-matrix ``cores``."""
    w = merge_cores(cores)
    return w.reshape(w.shape[1], w.shape[2])
