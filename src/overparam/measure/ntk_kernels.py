"""Kernel tools the NTK instrument shares with its baselines: spectra, decay-law fits, ridge regression,
and the closed-form Laplace and Gaussian kernels (with the Euclidean distance, as in the NTK literature:
the ReLU NTK on the sphere has the Laplace kernel's eigenvalue decay, Geifman et al. 2020; Chen & Xu 2021).

Nothing here knows about networks: a Gram matrix in, numbers out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DecayFit:
    """Least-squares fits of an eigenvalue sequence λ_i over i in [first, last] (1-based).

    power law:    log λ_i = c − power_exponent · log i      (λ_i ≈ C i^(−a), Laplace-like)
    exponential:  log λ_i = c − exp_rate · i                (λ_i ≈ C e^(−b i), Gaussian-like)
    R² of each line in its own coordinates; ``better`` names the larger R².
    """

    power_exponent: float
    power_r2: float
    exp_rate: float
    exp_r2: float
    better: str
    first: int
    last: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _line_r2(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(t, v, 1)
    resid = v - (slope * t + intercept)
    ss = float(np.sum((v - v.mean()) ** 2))
    return float(slope), (1.0 - float(np.sum(resid ** 2)) / ss) if ss > 0 else 1.0


def fit_decay(eigenvalues, first: int = 2, last: int | None = None, rel_floor: float = 1e-10) -> DecayFit:
    """Fit power-law and exponential decay to eigenvalues (sorted descending inside).

    first/last are 1-based indices; first=2 skips the top eigenvalue (the mean/constant mode, an outlier
    for ReLU kernels). last=None takes the eigenvalues up to n/2 (the tail of a finite Gram is dominated
    by sampling, not by the kernel's operator spectrum). Either way ``last`` stops at the last eigenvalue
    above ``rel_floor``·λ_1 (below it, float64 rounding); the range used is in the result.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1]
    if lam.size < 4 or lam[0] <= 0:
        raise ValueError(f"eigenvalues: need at least 4 with a positive largest, got {lam.size}")
    above = int(np.flatnonzero(lam > rel_floor * lam[0])[-1] + 1)
    if last is None:
        last = min(above, max(lam.size // 2, first + 3))
    last = min(last, lam.size, max(above, first + 2))  # never fit eigenvalues at the rounding floor
    if first < 1 or last - first < 2:
        raise ValueError(f"fit range: need at least 3 eigenvalues, got first={first}, last={last}")
    i = np.arange(first, last + 1, dtype=np.float64)
    v = lam[first - 1:last]
    if np.any(v <= 0):
        raise ValueError(f"fit range [{first}, {last}] contains non-positive eigenvalues; lower 'last'")
    logv = np.log(v)
    ps, pr2 = _line_r2(np.log(i), logv)
    es, er2 = _line_r2(i, logv)
    return DecayFit(power_exponent=-ps, power_r2=pr2, exp_rate=-es, exp_r2=er2,
                    better="exponential" if er2 > pr2 else "power", first=first, last=last)


@dataclass
class KernelSpectrum:
    """Eigenvalues of a symmetric kernel matrix (descending, float64), optional eigenvectors (columns),
    and the decay fit."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    decay: DecayFit
    seconds: float = 0.0

    def normalized(self) -> np.ndarray:
        """λ_i / λ_1: compares kernels of different scales."""
        return self.eigenvalues / self.eigenvalues[0]

    def plot(self, ax=None, label: str | None = None, fit: bool = True):
        import matplotlib.pyplot as plt

        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(5, 3.6))
        lam = self.normalized()
        i = np.arange(1, lam.size + 1)
        keep = lam > 0
        line, = ax.loglog(i[keep], lam[keep], lw=1.6, label=label)
        if fit:
            d = self.decay
            j = np.arange(d.first, d.last + 1)
            if d.better == "power":
                c = np.log(lam[d.first - 1]) + d.power_exponent * np.log(d.first)
                ax.loglog(j, np.exp(c - d.power_exponent * np.log(j)), ":", color=line.get_color())
            else:
                c = np.log(lam[d.first - 1]) + d.exp_rate * d.first
                ax.loglog(j, np.exp(c - d.exp_rate * j), ":", color=line.get_color())
        ax.set_xlabel("index i")
        ax.set_ylabel("λ_i / λ_1")
        return fig if fig is not None else ax.figure


def kernel_spectrum(K, vectors: bool = False, fit: tuple[int, int | None] = (2, None)) -> KernelSpectrum:
    """``eigh`` of a symmetric kernel matrix in float64 (descending) with :func:`fit_decay`."""
    start = time.perf_counter()
    Kt = torch.as_tensor(np.asarray(K) if not torch.is_tensor(K) else K).detach().to(torch.float64)
    if Kt.ndim != 2 or Kt.shape[0] != Kt.shape[1]:
        raise ValueError(f"K: need a square matrix, got shape {tuple(Kt.shape)}")
    Kt = 0.5 * (Kt + Kt.T)
    if vectors:
        lam, vec = torch.linalg.eigh(Kt)
        lam, vec = lam.flip(0).numpy(), vec.flip(1).numpy()
    else:
        lam, vec = torch.linalg.eigvalsh(Kt).flip(0).numpy(), None
    return KernelSpectrum(eigenvalues=lam, eigenvectors=vec, decay=fit_decay(lam, *fit),
                          seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- kernels


def _pairwise_distance(X1, X2) -> torch.Tensor:
    a = torch.as_tensor(X1).detach().to(torch.float64).flatten(1)
    b = a if X2 is None else torch.as_tensor(X2).detach().to(torch.float64).flatten(1)
    return torch.cdist(a, b)


def median_distance(X) -> float:
    """Median Euclidean distance between distinct points (the usual bandwidth heuristic)."""
    d = _pairwise_distance(X, None)
    n = d.shape[0]
    return float(d[~torch.eye(n, dtype=torch.bool)].median()) if n > 1 else 1.0


def laplace_kernel(X1, X2=None, bandwidth: float | None = None) -> torch.Tensor:
    """exp(−‖x − x'‖₂ / bandwidth); bandwidth None = median distance of X1. (sklearn's laplacian_kernel
    uses the L1 distance instead; the NTK comparison needs the Euclidean one.)"""
    h = median_distance(X1) if bandwidth is None else float(bandwidth)
    return torch.exp(-_pairwise_distance(X1, X2) / h)


def gaussian_kernel(X1, X2=None, bandwidth: float | None = None) -> torch.Tensor:
    """exp(−‖x − x'‖₂² / (2·bandwidth²)); bandwidth None = median distance of X1."""
    h = median_distance(X1) if bandwidth is None else float(bandwidth)
    return torch.exp(-_pairwise_distance(X1, X2) ** 2 / (2 * h * h))


# ---------------------------------------------------------------------------------------------- regression


@dataclass
class KernelRegression:
    """Predictions of kernel ridge regression, with errors when labels are known."""

    train_pred: np.ndarray
    test_pred: np.ndarray
    train_mse: float
    test_mse: float
    train_error: float      # classification error (argmax vs label); NaN for regression targets
    test_error: float
    ridge: float
    seconds: float
    kernel: str = "kernel"


def kernel_regression(K_train, K_test_train, Y, *, ridge: float = 1e-6, y_train=None, y_test=None,
                      offset_train=None, offset_test=None) -> KernelRegression:
    """Solve (K + ridge·mean(diag K)·I) α = Y − offset_train; predict offset_test + K_test_train α.

    Y: (n, k) targets (one-hot for classes). y_train / y_test: labels (int, for errors) or float targets.
    The ridge is relative to the kernel's mean diagonal, so it means the same for any kernel scale.
    """
    start = time.perf_counter()
    K = torch.as_tensor(K_train).to(torch.float64)
    Kx = torch.as_tensor(K_test_train).to(torch.float64)
    Y = torch.as_tensor(Y).to(torch.float64)
    Y = Y.reshape(len(Y), -1)
    n = K.shape[0]
    if K.shape != (n, n) or Kx.shape[1] != n or len(Y) != n:
        raise ValueError(f"shapes: K_train {tuple(K.shape)}, K_test_train {tuple(Kx.shape)}, Y {tuple(Y.shape)}")
    off_tr = torch.zeros_like(Y) if offset_train is None else torch.as_tensor(offset_train).to(torch.float64)
    off_te = (torch.zeros(Kx.shape[0], Y.shape[1], dtype=torch.float64) if offset_test is None
              else torch.as_tensor(offset_test).to(torch.float64))
    lam = ridge * float(K.diagonal().mean())
    A = 0.5 * (K + K.T) + lam * torch.eye(n, dtype=torch.float64)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        alpha = torch.cholesky_solve(Y - off_tr, L)
    else:  # not numerically PD (ridge too small): least squares
        alpha = torch.linalg.lstsq(A, Y - off_tr).solution
    tr = off_tr + K @ alpha
    te = off_te + Kx @ alpha

    def score(pred, labels, onehot):
        if labels is None:
            return math.nan, math.nan
        labels = torch.as_tensor(labels)
        if torch.is_floating_point(labels):
            return float(((pred - labels.reshape(pred.shape).to(pred.dtype)) ** 2).mean()), math.nan
        target = torch.nn.functional.one_hot(labels.long(), pred.shape[1]).to(pred.dtype)
        return float(((pred - target) ** 2).mean()), float((pred.argmax(1) != labels).double().mean())

    tr_mse, tr_err = score(tr, y_train, Y)
    te_mse, te_err = score(te, y_test, None)
    return KernelRegression(train_pred=tr.numpy(), test_pred=te.numpy(), train_mse=tr_mse, test_mse=te_mse,
                            train_error=tr_err, test_error=te_err, ridge=ridge, seconds=time.perf_counter() - start)
