"""Lanczos with full reorthogonalization, for any symmetric operator given as ``matmat(V) -> A V``.

Several independent Lanczos processes (one per starting vector) advance together so that each step costs one
``matmat`` of as many columns: stochastic Lanczos quadrature runs ~10 of them, an eigensolver one.
Full reorthogonalization (classical Gram-Schmidt, applied twice: "twice is enough", Giraud et al. 2005) keeps
the basis orthogonal to working precision, so no spurious copies of converged Ritz values (ghosts) appear;
this is the setting of Ghorbani, Krishnan & Xiao 2019. It costs O(m P) memory per process.

The basis lives where the starting vectors live (the model's device) and in their dtype (float32 for large
models: a basis of 30 vectors of 11M parameters is 1.3 GB), while the tridiagonal matrix is kept and solved in
float64 on the host. :func:`lanczos_eigs` checks its wanted Ritz pairs after every step and stops as soon as
each one's error estimate is at most ``tol`` times its value: the residual ``||A x - theta x||`` bounds the error
of a Ritz value, and once the value is separated from the rest by a gap the error is of the order of
``residual^2 / gap`` (:func:`eigenvalue_error`). The residuals are returned with the values, so the rigorous
bound is always at hand.

Without restarts, a single Lanczos process finds one copy of each distinct eigenvalue: repeated eigenvalues
(the exact zeros of a ReLU network's Hessian) appear once. Use ``eigsh`` (ARPACK) when multiplicities matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


class LanczosProcesses:
    """b Lanczos processes on a P x P symmetric operator, started from the columns of ``V0`` (P x b).

    ``V0``'s dtype and device are the basis's (a numpy array becomes float64 on the CPU). ``deflate`` (P x d,
    orthonormal columns) is kept out of every Lanczos vector: the processes see A restricted to its complement
    (known eigenvectors, for finding the next ones)."""

    def __init__(self, matmat: Callable[[torch.Tensor], torch.Tensor], V0, breakdown: float | None = None,
                 deflate: torch.Tensor | None = None):
        V0 = torch.as_tensor(V0)
        if not torch.is_floating_point(V0):
            V0 = V0.double()
        if V0.ndim == 1:
            V0 = V0[:, None]
        self.matmat, self.dim, self.b = matmat, V0.shape[0], V0.shape[1]
        self.dtype, self.device = V0.dtype, V0.device
        self.breakdown = breakdown if breakdown is not None else (1e-12 if V0.dtype == torch.float64 else 1e-6)
        self.deflate = None if deflate is None else torch.as_tensor(deflate, dtype=self.dtype, device=self.device)
        self._Q = torch.zeros(self.b, min(self.dim, 32), self.dim, dtype=self.dtype, device=self.device)
        self._Q[:, 0] = self._project(V0 / V0.norm(dim=0, keepdim=True)).T
        self._Q[:, 0] /= self._Q[:, 0].norm(dim=1, keepdim=True)
        self.alphas: list[list[float]] = [[] for _ in range(self.b)]
        self.betas: list[list[float]] = [[] for _ in range(self.b)]
        self.active = np.ones(self.b, dtype=bool)   # False once a process has found an invariant subspace
        self.scale = 0.0                            # running estimate of ||A||, for the breakdown test

    def _project(self, W: torch.Tensor) -> torch.Tensor:
        if self.deflate is None:
            return W
        return W - self.deflate @ (self.deflate.T @ W)

    @property
    def steps(self) -> np.ndarray:
        return np.array([len(a) for a in self.alphas])

    def _grow(self, m: int) -> None:
        if m <= self._Q.shape[1]:
            return
        cap = min(self.dim, max(m, 2 * self._Q.shape[1]))
        Q = torch.zeros(self.b, cap, self.dim, dtype=self.dtype, device=self.device)
        Q[:, :self._Q.shape[1]] = self._Q
        self._Q = Q

    def step(self) -> bool:
        """Advance every active process by one step; False when none could advance."""
        idx = [j for j in range(self.b) if self.active[j] and len(self.alphas[j]) < self.dim]
        if not idx:
            return False
        k = np.array([len(self.alphas[j]) for j in idx])
        Qk = torch.stack([self._Q[j, k_] for j, k_ in zip(idx, k)], dim=1)        # P x |idx|
        W = self._project(torch.as_tensor(self.matmat(Qk)).to(self.device, self.dtype))
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
            w = self._project(w)
            beta = float(w.norm())
            self.alphas[j].append(alpha)
            self.scale = max(self.scale, abs(alpha) + beta)
            if kj + 1 >= self.dim or beta <= self.breakdown * max(self.scale, 1e-300):
                self.active[j] = False        # Krylov space is invariant: T's eigenvalues are exact
                continue
            self.betas[j].append(beta)
            self._Q[j, kj + 1] = w / beta
        return True

    def extend(self, n: int) -> None:
        """Advance every active process by up to ``n`` steps (never beyond P steps)."""
        for _ in range(n):
            if not self.step():
                return

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
    vectors: torch.Tensor       # P x k Ritz vectors (on the basis's device), columns matching values
    residuals: np.ndarray       # ||A x - theta x|| of each pair, from the Lanczos relation
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


def eigenvalue_error(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Error estimates of Ritz values: min(r, r^2 / gap), gap the distance to the nearest other Ritz value.

    ``r`` bounds ``|lambda - theta|`` rigorously; once the Ritz value is separated from the rest of the spectrum
    the error is second order, ``r^2 / gap`` (Parlett, The Symmetric Eigenvalue Problem, sec. 11.7). With one Ritz
    value there is no gap yet and the estimate is ``r``."""
    if len(theta) < 2:
        return residuals.copy()
    diffs = np.abs(theta[:, None] - theta[None, :])
    np.fill_diagonal(diffs, np.inf)
    gap = np.maximum(diffs.min(1), 1e-300)
    return np.minimum(residuals, residuals ** 2 / gap)


def lanczos_eigs(matmat, dim: int, k: int, which: str = "largest", tol: float = 1e-6,
                 max_steps: int | None = None, seed: int = 0, v0=None, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, deflate: torch.Tensor | None = None,
                 on_step: Callable[[int], None] | None = None) -> LanczosEigs:
    """Extreme eigenpairs by Lanczos with full reorthogonalization, stopped after the first step at which every
    wanted Ritz value's error estimate (:func:`eigenvalue_error`) is <= ``tol`` * |its value|, or at ``max_steps``. ``v0`` warm-starts it (e.g. from an earlier top eigenvector), ``deflate`` keeps known
    eigenvectors out, ``on_step(steps)`` is called after every product (progress)."""
    if v0 is None:
        gen = torch.Generator().manual_seed(seed)
        v0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    start = torch.as_tensor(v0).to(device=device or torch.as_tensor(v0).device, dtype=dtype)
    proc = LanczosProcesses(matmat, start[:, None], deflate=deflate)
    max_steps = dim if max_steps is None else min(max_steps, dim)
    converged, want, theta, S, res = False, np.arange(0), np.zeros(0), np.zeros((0, 0)), np.zeros(0)
    while proc.steps[0] < max_steps and proc.step():
        if on_step is not None:
            on_step(int(proc.steps[0]))
        theta, S, res = proc.ritz(0)
        want = wanted_indices(len(theta), k, which)
        enough = len(want) == min(k, dim)
        if enough and np.all(eigenvalue_error(theta, res)[want] <= tol * np.maximum(np.abs(theta[want]), 1e-300)):
            converged = True
            break
        if not proc.active[0]:
            break
    if not proc.active[0]:          # an invariant subspace: the Ritz pairs are exact
        theta, S, res = proc.ritz(0)
        want = wanted_indices(len(theta), k, which)
        converged = True
    order = want[::-1]
    vecs = proc.basis(0).T @ torch.as_tensor(S[:, order], dtype=proc.dtype, device=proc.device)
    return LanczosEigs(theta[order], vecs, res[order], converged, int(proc.steps[0]))
