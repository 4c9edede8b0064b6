"""Lanczos with full reorthogonalization, for any symmetric operator given as ``matmat(V) -> A V``.

Several independent Lanczos processes (one per starting vector) advance together so that each step costs one
``matmat`` of as many columns: stochastic Lanczos quadrature runs ~10 of them, an eigensolver one.
Full reorthogonalization (classical Gram-Schmidt, applied twice: "twice is enough", Giraud et al. 2005) keeps
the basis orthogonal to machine precision, so no spurious copies of converged Ritz values (ghosts) appear;
this is the setting of Ghorbani, Krishnan & Xiao 2019. It costs O(m P) memory per process.

Without restarts, a single Lanczos process finds one copy of each distinct eigenvalue: repeated eigenvalues
(the exact zeros of a ReLU network's Hessian) appear once. Use ``eigsh`` (ARPACK) when multiplicities matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


class LanczosProcesses:
    """b Lanczos processes on a P x P symmetric operator, started from the columns of ``V0`` (P x b)."""

    def __init__(self, matmat: Callable[[torch.Tensor], torch.Tensor], V0: torch.Tensor,
                 breakdown: float = 1e-12):
        V0 = torch.as_tensor(V0, dtype=torch.float64)
        if V0.ndim == 1:
            V0 = V0[:, None]
        self.matmat, self.dim, self.b = matmat, V0.shape[0], V0.shape[1]
        self.breakdown = breakdown
        self._Q = torch.zeros(self.b, min(self.dim, 32), self.dim, dtype=torch.float64)
        self._Q[:, 0] = (V0 / V0.norm(dim=0, keepdim=True)).T
        self.alphas: list[list[float]] = [[] for _ in range(self.b)]
        self.betas: list[list[float]] = [[] for _ in range(self.b)]
        self.active = np.ones(self.b, dtype=bool)   # False once a process has found an invariant subspace
        self.scale = 0.0                            # running estimate of ||A||, for the breakdown test

    @property
    def steps(self) -> np.ndarray:
        return np.array([len(a) for a in self.alphas])

    def _grow(self, m: int) -> None:
        if m <= self._Q.shape[1]:
            return
        cap = min(self.dim, max(m, 2 * self._Q.shape[1]))
        Q = torch.zeros(self.b, cap, self.dim, dtype=torch.float64)
        Q[:, :self._Q.shape[1]] = self._Q
        self._Q = Q

    def extend(self, n: int) -> None:
        """Advance every active process by up to ``n`` steps (never beyond P steps)."""
        for _ in range(n):
            idx = [j for j in range(self.b) if self.active[j] and len(self.alphas[j]) < self.dim]
            if not idx:
                return
            k = np.array([len(self.alphas[j]) for j in idx])
            Qk = torch.stack([self._Q[j, k_] for j, k_ in zip(idx, k)], dim=1)        # P x |idx|
            W = torch.as_tensor(self.matmat(Qk), dtype=torch.float64)
            self._grow(int(k.max()) + 2)
            for c, (j, kj) in enumerate(zip(idx, k)):
                q, w = self._Q[j, kj], W[:, c].clone()
                alpha = float(q @ w)
                w -= alpha * q
                if kj > 0:
                    w -= self.betas[j][-1] * self._Q[j, kj - 1]
                basis = self._Q[j, :kj + 1]
                for _ in range(2):
                    w -= basis.T @ (basis @ w)
                beta = float(w.norm())
                self.alphas[j].append(alpha)
                self.scale = max(self.scale, abs(alpha) + beta)
                if kj + 1 >= self.dim or beta <= self.breakdown * max(self.scale, 1e-300):
                    self.active[j] = False        # Krylov space is invariant: T's eigenvalues are exact
                    continue
                self.betas[j].append(beta)
                self._Q[j, kj + 1] = w / beta

    def tridiagonal(self, j: int = 0) -> tuple[np.ndarray, np.ndarray]:
        m = len(self.alphas[j])
        return np.array(self.alphas[j]), np.array(self.betas[j][:m - 1])

    def ritz(self, j: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values (ascending), eigenvectors S of T, and residual norms |beta_m S[m-1, i]| of process j."""
        from scipy.linalg import eigh_tridiagonal

        a, b = self.tridiagonal(j)
        if len(a) == 1:
            theta, S = a.copy(), np.ones((1, 1))
        else:
            theta, S = eigh_tridiagonal(a, b)
        beta_m = self.betas[j][len(a) - 1] if self.active[j] and len(self.betas[j]) >= len(a) else 0.0
        return theta, S, np.abs(beta_m * S[-1, :])

    def basis(self, j: int = 0) -> torch.Tensor:
        """The Lanczos vectors of process j as rows (m x P)."""
        return self._Q[j, :len(self.alphas[j])]


@dataclass
class LanczosEigs:
    values: np.ndarray          # wanted Ritz values, descending
    vectors: np.ndarray         # P x k Ritz vectors, columns matching values
    residuals: np.ndarray       # ||A x - theta x|| of each pair
    converged: bool
    steps: int


def wanted_indices(n: int, k: int, which: str) -> np.ndarray:
    """Indices into an ascending array of length n: the k largest, k smallest, or ceil(k/2) top + floor(k/2) bottom."""
    k = min(k, n)
    if which == "largest":
        return np.arange(n - k, n)
    if which == "smallest":
        return np.arange(0, k)
    top = (k + 1) // 2
    bottom = k - top
    return np.unique(np.concatenate([np.arange(0, bottom), np.arange(n - top, n)]))


def lanczos_eigs(matmat, dim: int, k: int, which: str = "largest", tol: float = 1e-10,
                 max_steps: int | None = None, seed: int = 0, v0: np.ndarray | None = None) -> LanczosEigs:
    """Extreme eigenpairs by Lanczos with full reorthogonalization, grown until every wanted Ritz pair has a
    residual <= tol * ||A|| (estimated by the largest |Ritz value|) or ``max_steps`` is reached."""
    rng = np.random.default_rng(seed)
    start = torch.as_tensor(v0 if v0 is not None else rng.standard_normal(dim), dtype=torch.float64)
    proc = LanczosProcesses(matmat, start[:, None])
    max_steps = dim if max_steps is None else min(max_steps, dim)
    chunk = max(2 * k, 20)
    converged = False
    while True:
        proc.extend(min(chunk, max_steps - proc.steps[0]))
        theta, S, res = proc.ritz(0)
        want = wanted_indices(len(theta), k, which)
        norm = max(np.abs(theta).max(), 1e-300)
        converged = bool(np.all(res[want] <= tol * norm)) and len(want) == min(k, dim)
        if converged or not proc.active[0] or proc.steps[0] >= max_steps:
            converged = converged or not proc.active[0]
            break
        chunk = max(10, k)
    order = want[::-1]
    vecs = (proc.basis(0).T @ torch.as_tensor(S[:, order])).numpy()
    return LanczosEigs(theta[order], vecs, res[order], converged, int(proc.steps[0]))
