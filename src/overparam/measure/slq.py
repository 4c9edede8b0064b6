"""Stochastic Lanczos quadrature (SLQ) and stochastic trace estimators, for any symmetric operator.

SLQ (Golub & Meurant; Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019): for a random unit vector v,
m Lanczos steps give a tridiagonal T = S diag(theta) S^T, and the m nodes theta_i with weights S[0, i]^2
form a Gauss quadrature of the spectral measure seen from v, whose expectation over v is the eigenvalue
density (1/P) sum_j delta(t - lambda_j). Averaging over several Rademacher vectors and convolving with a
narrow Gaussian gives a smooth density.

Trace: Hutchinson (E z^T A z = tr A for Rademacher z) and Hutch++ (Meyer, Musco, Musco & Woodruff 2021),
which spends a third of its products on a sketch of A's top range and computes that part exactly; it wins
when the spectrum has a few large outliers, the Hessian's shape.
"""

from __future__ import annotations

import numpy as np
import torch

from overparam.measure.lanczos import LanczosProcesses


def rademacher(dim: int, n: int, seed: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """n random sign vectors of length dim (columns), drawn on the host from ``seed`` (the same on every device)."""
    gen = torch.Generator().manual_seed(int(seed))
    Z = torch.randint(0, 2, (dim, n), generator=gen, dtype=torch.int8).to(dtype).mul_(2).sub_(1)
    return Z.to(device) if device is not None else Z


def slq_nodes(matmat, dim: int, n_vectors: int = 10, n_steps: int = 90, seed: int = 0,
              max_block: int | None = None, dtype: torch.dtype = torch.float64, device=None,
              on_step=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quadrature nodes and weights of ``n_vectors`` Rademacher starts: (nodes, weights, vector index), flat.

    The weights of each vector sum to 1/n_vectors, so all weights sum to 1. A process that reaches an
    invariant subspace stops early (its quadrature is then exact). Processes run ``max_block`` at a time
    (default: as many as fit in ~512 MB of Lanczos vectors), their bases in ``dtype`` on ``device``.
    """
    Z = rademacher(dim, n_vectors, seed, dtype, device)
    steps = min(n_steps, dim)
    itemsize = torch.finfo(dtype).bits // 8
    if max_block is None:
        max_block = max(1, int(512e6 // (itemsize * dim * max(steps, 1))))
    nodes, weights, owner = [], [], []
    for s in range(0, n_vectors, max_block):
        proc = LanczosProcesses(matmat, Z[:, s:s + max_block])
        for step in range(steps):
            if not proc.step():
                break
            if on_step is not None:
                on_step(step + 1)
        for j in range(proc.b):
            theta, S, _ = proc.ritz(j)
            nodes.append(theta)
            weights.append(S[0, :] ** 2 / n_vectors)
            owner.append(np.full(len(theta), s + j))
    return np.concatenate(nodes), np.concatenate(weights), np.concatenate(owner)


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """sum_i w_i N(t; node_i, sigma^2) on the grid (integrates to sum(w) when the grid covers the nodes)."""
    d = (grid[:, None] - nodes[None, :]) / sigma
    return (np.exp(-0.5 * d ** 2) @ weights) / (sigma * np.sqrt(2 * np.pi))


def _quadratic_forms(matmat, Z: torch.Tensor) -> torch.Tensor:
    """z_i^T A z_i for the columns of Z, in float64."""
    return (Z.double() * torch.as_tensor(matmat(Z)).to(Z.device).double()).sum(0)


def hutchinson(matmat, dim: int, n: int, seed: int = 0, block: int = 16, dtype: torch.dtype = torch.float64,
               device=None) -> tuple[float, float]:
    """Hutchinson's estimate of tr A from n Rademacher products, and its standard error."""
    Z = rademacher(dim, n, seed, dtype, device)
    x = torch.cat([_quadratic_forms(matmat, Z[:, s:s + block]) for s in range(0, n, block)]).cpu().numpy()
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def hutch_plus_plus(matmat, dim: int, n: int, seed: int = 0, dtype: torch.dtype = torch.float64,
                    device=None) -> float:
    """Hutch++ with n products: n/3 to sketch the range, n/3 for its exact part, n/3 for the remainder."""
    if n < 3:
        raise ValueError(f"Hutch++ needs at least 3 matrix-vector products, got {n}")
    k = n // 3
    rest = n - 2 * k
    seeds = np.random.SeedSequence(seed).spawn(2)
    S = rademacher(dim, k, int(seeds[0].generate_state(1)[0]), dtype, device)
    G = rademacher(dim, rest, int(seeds[1].generate_state(1)[0]), dtype, device)
    Q, _ = torch.linalg.qr(torch.as_tensor(matmat(S)).to(S.device).double())
    exact = float((Q * torch.as_tensor(matmat(Q.to(dtype))).to(S.device).double()).sum())
    Gp = G.double() - Q @ (Q.T @ G.double())
    remainder = float(_quadratic_forms(matmat, Gp.to(dtype)).sum()) / rest
    return exact + remainder
