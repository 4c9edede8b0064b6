"""The Hessian instrument: extreme eigenvalues, spectral density, trace and index of the loss Hessian of any
``nn.Module`` (or of its Gauss-Newton part G, or of the residual H - G), matrix-free and streamed over data.

    from overparam.measure.hessian import hessian_eigs, hessian_density
    top = hessian_eigs(model, "cross_entropy", (X, y), k=10)          # top.values[0] is the largest
    dens = hessian_density(model, "cross_entropy", (X, y))            # SLQ, Ghorbani et al. 2019
    dens.plot()

Every function takes ``(model, loss_fn, data)`` -- or a ready :class:`CurvatureOperator` as its first
argument, to reuse one operator for several measurements -- and returns a dataclass that carries the cost
(``n_matvecs``: Hessian-vector products over the whole data; ``seconds``). Spectra are in float64 by default.

Eigensolvers (``method=``):
  - ``"lanczos"`` (the default for ``"auto"``): Lanczos with full reorthogonalization on the operator's device,
    checked after every product and stopped as soon as every wanted Ritz pair's residual is at most ``tol`` times
    its value (so each eigenvalue is within relative ``tol``). It needs the fewest products for a handful of
    extreme eigenvalues (``benchmarks/bench_scale.py``); it finds one copy of a repeated eigenvalue.
  - ``"eigsh"``: SciPy's ARPACK on ``op.to_scipy()`` (implicitly restarted Lanczos, on the host in float64). It
    finds repeated eigenvalues (the zeros of over-parameterized nets) but spends at least ~20 products.
  - ``"dense"``: all P eigenvalues by ``torch.linalg.eigh`` of the dense matrix (P matvecs; small models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from overparam.measure.hessian_operator import (
    CURVATURES,
    CurvatureError,
    CurvatureOperator,
    GaussNewtonOperator,
    HessianOperator,
    ResidualOperator,
    curvature_operator,
    resolve_loss,
)
from overparam.measure.lanczos import lanczos_eigs, wanted_indices
from overparam.measure.slq import gaussian_density, hutch_plus_plus, hutchinson, slq_nodes

WHICH = ("largest", "smallest", "both")
EIG_METHODS = ("auto", "lanczos", "eigsh", "dense")
TRACE_METHODS = ("hutchinson", "hutch++", "exact")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _op(model, loss_fn, data, curvature, op_kw) -> CurvatureOperator:
    return curvature_operator(model, loss_fn, data, curvature=curvature, **op_kw)


class _Cost:
    """Matvecs and seconds spent by one measurement on a (possibly shared) operator."""

    def __init__(self, op: CurvatureOperator):
        self.op, self.m0, self.t0 = op, op.n_matvecs, time.perf_counter()

    def done(self) -> tuple[int, float]:
        return self.op.n_matvecs - self.m0, time.perf_counter() - self.t0


# ---------------------------------------------------------------------------------------------- eigenvalues
@dataclass
class HessianEigs:
    values: np.ndarray              # descending: values[0] is the largest found
    vectors: np.ndarray             # P x k, column i is the eigenvector of values[i]
    residuals: np.ndarray           # ||H x - lambda x|| per pair (relative accuracy check)
    which: str
    method: str
    curvature: str
    n_params: int
    n_matvecs: int
    seconds: float
    converged: bool = True

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
        ax.stem(np.arange(1, len(self.values) + 1), self.values)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("rank")
        ax.set_ylabel("eigenvalue")
        ax.set_title(f"{self.curvature}: {self.which} {len(self.values)} eigenvalues of {self.n_params} "
                     f"({self.method}, {self.n_matvecs} matvecs)", fontsize=9)
        return fig


def hessian_eigs(model, loss_fn=None, data=None, k: int = 10, which: str = "largest", tol: float | None = None,
                 method: str = "auto", curvature: str = "hessian", seed: int = 0, max_matvecs: int | None = None,
                 v0=None, progress=None, **op_kw) -> HessianEigs:
    """The ``k`` largest / smallest (algebraic) eigenvalues, or ceil(k/2) largest and floor(k/2) smallest
    (``which="both"``), with eigenvectors.

    ``tol`` (default 1e-8 in float64, 1e-4 in float32): for lanczos, the relative accuracy of every eigenvalue
    (residual <= tol * |value|); for eigsh, ARPACK's relative tolerance. ``v0`` warm-starts lanczos (e.g. from an
    earlier top eigenvector); ``progress(n_matvecs)`` is called after every product. ``op_kw`` go to the
    operator (dtype, device, batch_size, inputs_of, params)."""
    _choice("which", which, WHICH)
    _choice("method", method, EIG_METHODS)
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    op = _op(model, loss_fn, data, curvature, op_kw)
    P = op.dim
    if tol is None:
        tol = 1e-8 if op.dtype == torch.float64 else 1e-4
    if which == "both" and k == 1:
        which = "largest"  # ceil(1/2) from the top, none from the bottom
    if method == "auto":
        method = "dense" if k >= P - 1 or P <= 64 else "lanczos"
    if method == "eigsh" and k >= P - 1:
        method = "dense"  # ARPACK needs k < P - 1 (and the dense route is cheaper there anyway)
    cost = _Cost(op)
    converged, residuals = True, None
    if method == "dense":
        evals, evecs = torch.linalg.eigh(op.dense().to(torch.float64))
        idx = torch.as_tensor(wanted_indices(P, k, which)[::-1].copy(), device=evals.device)
        values, vectors = evals[idx].cpu().numpy(), evecs[:, idx]
    elif method == "lanczos":
        res = lanczos_eigs(op.matmat, P, k, which, tol=tol, max_steps=max_matvecs, seed=seed, v0=v0,
                           dtype=op.dtype, device=op.device, on_step=progress)
        values, vectors, converged, residuals = res.values, res.vectors, res.converged, res.residuals
    else:
        v0_np = np.random.default_rng(seed).standard_normal(P) if v0 is None else np.asarray(v0, dtype=np.float64)
        mode = {"largest": "LA", "smallest": "SA", "both": "BE"}[which]
        maxiter = None if max_matvecs is None else max(1, max_matvecs // max(2 * k + 1, 20))  # restarts
        try:
            values, vectors = eigsh(op.to_scipy(), k=min(k, P - 2), which=mode, tol=tol, v0=v0_np, maxiter=maxiter)
        except ArpackNoConvergence as exc:
            values, vectors, converged = exc.eigenvalues, exc.eigenvectors, False
        order = np.argsort(values)[::-1]
        values, vectors = values[order], torch.as_tensor(vectors[:, order])
    n_mv, secs = cost.done()
    vectors = torch.as_tensor(vectors)
    if residuals is None:
        # residuals cost k more products; they are the honest accuracy statement, computed outside the count
        V = vectors.to(op.device, op.dtype)
        HV = op.matmat(V)
        op.n_matvecs -= V.shape[1]
        residuals = (HV.double() - V.double() * torch.as_tensor(values, device=op.device)[None, :]).norm(dim=0)
        residuals = residuals.cpu().numpy()
    return HessianEigs(np.asarray(values, dtype=np.float64), vectors.cpu().numpy(), np.asarray(residuals), which,
                       method, op.kind, P, n_mv, secs, bool(converged))


# ---------------------------------------------------------------------------------------------- density
@dataclass
class HessianDensity:
    grid: np.ndarray               # eigenvalue axis
    density: np.ndarray            # Gaussian-broadened SLQ density on the grid (integrates to ~1)
    nodes: np.ndarray              # raw quadrature nodes (Ritz values), all vectors concatenated
    weights: np.ndarray            # their weights (sum to 1)
    vector: np.ndarray             # which random vector each node came from
    sigma: float                   # Gaussian broadening (eigenvalue units)
    n_vectors: int
    n_steps: int
    curvature: str
    n_params: int
    n_matvecs: int
    seconds: float

    def mass_below(self, t: float) -> float:
        """Estimated fraction of eigenvalues < t (from the raw quadrature, no broadening)."""
        return float(self.weights[self.nodes < t].sum())

    def mass_above(self, t: float) -> float:
        return float(self.weights[self.nodes > t].sum())

    def plot(self, ax=None, log: bool = True):
        import matplotlib.pyplot as plt

        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 3.8))
        ax.plot(self.grid, self.density, color="C0")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(max(self.density.max() * 1e-8, 1e-12), self.density.max() * 3)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        ax.set_title(f"{self.curvature} spectral density (SLQ, {self.n_vectors} vectors x {self.n_steps} steps, "
                     f"P={self.n_params})", fontsize=9)
        return fig


def hessian_density(model, loss_fn=None, data=None, n_vectors: int = 10, n_steps: int = 90,
                    sigma: float | None = None, n_grid: int = 1000, curvature: str = "hessian", seed: int = 0,
                    progress=None, **op_kw) -> HessianDensity:
    """Spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019: ~90 steps, ~10 Rademacher
    vectors, full reorthogonalization, float64). ``sigma`` (default 1% of the node range) broadens the nodes."""
    if n_vectors < 1 or n_steps < 1:
        raise ValueError("n_vectors and n_steps must be >= 1")
    op = _op(model, loss_fn, data, curvature, op_kw)
    cost = _Cost(op)
    nodes, weights, owner = slq_nodes(op.matmat, op.dim, n_vectors, n_steps, seed, dtype=op.dtype,
                                      device=op.device, on_step=progress)
    n_mv, secs = cost.done()
    lo, hi = float(nodes.min()), float(nodes.max())
    span = max(hi - lo, abs(hi), 1e-12)
    sigma = 0.01 * span if sigma is None else float(sigma)
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
    return HessianDensity(grid, gaussian_density(nodes, weights, grid, sigma), nodes, weights, owner, sigma,
                          n_vectors, min(n_steps, op.dim), op.kind, op.dim, n_mv, secs)


# ---------------------------------------------------------------------------------------------- trace
@dataclass
class HessianTrace:
    estimate: float
    std_error: float               # Hutchinson's sample standard error (nan for Hutch++ and exact)
    method: str
    curvature: str
    n_params: int
    n_matvecs: int
    seconds: float


def hessian_trace(model, loss_fn=None, data=None, method: str = "hutch++", samples: int = 99,
                  curvature: str = "hessian", seed: int = 0, **op_kw) -> HessianTrace:
    """tr H from ``samples`` Hessian-vector products (Hutchinson or Hutch++), or exactly from the dense matrix."""
    _choice("method", method, TRACE_METHODS)
    op = _op(model, loss_fn, data, curvature, op_kw)
    cost = _Cost(op)
    if method == "exact":
        est, se = float(torch.diagonal(op.dense()).double().sum()), float("nan")
    elif method == "hutchinson":
        if samples < 1:
            raise ValueError(f"samples: must be >= 1, got {samples}")
        est, se = hutchinson(op.matmat, op.dim, samples, seed, dtype=op.dtype, device=op.device)
    else:
        est, se = hutch_plus_plus(op.matmat, op.dim, samples, seed, op.dtype, op.device), float("nan")
    n_mv, secs = cost.done()
    return HessianTrace(est, se, method, op.kind, op.dim, n_mv, secs)


# ---------------------------------------------------------------------------------------------- index
@dataclass
class HessianIndex:
    fraction: float                # fraction of eigenvalues < -tol
    n_negative: float              # count (an estimate, fraction * P, with method "slq")
    n_params: int
    tol: float                     # eigenvalues in [-tol, tol] count as zero
    method: str                    # "dense" (exact) or "slq" (estimate)
    eigenvalues: np.ndarray | None = field(default=None, repr=False)  # all of them, with "dense"
    n_matvecs: int = 0
    seconds: float = 0.0
    fraction_zero: float = float("nan")

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
        if self.eigenvalues is not None:
            ax.hist(self.eigenvalues, bins=100, color="C0")
            ax.set_yscale("log")
        ax.axvline(-self.tol, color="C3", ls=":")
        ax.set_xlabel("eigenvalue")
        ax.set_title(f"index {self.fraction:.4f} ({self.method}, P={self.n_params})", fontsize=9)
        return fig


def hessian_index(model, loss_fn=None, data=None, method: str = "auto", rtol: float | None = None,
                  dense_limit: int = 3000, curvature: str = "hessian", seed: int = 0, n_vectors: int = 10,
                  n_steps: int = 90, **op_kw) -> HessianIndex:
    """Fraction of negative eigenvalues (Dauphin et al. 2014's index). Exact (dense) for P <= ``dense_limit``
    or ``method="dense"``; else estimated by SLQ as the quadrature weight below -tol. Eigenvalues within
    tol = rtol * max|lambda| of zero count as zero; rtol defaults to sqrt(machine epsilon) of the dtype."""
    _choice("method", method, ("auto", "dense", "slq"))
    op = _op(model, loss_fn, data, curvature, op_kw)
    if rtol is None:
        rtol = float(np.sqrt(torch.finfo(op.dtype).eps))
    cost = _Cost(op)
    if method == "dense" or (method == "auto" and op.dim <= dense_limit):
        ev = torch.linalg.eigvalsh(op.dense().to(torch.float64)).cpu().numpy()
        tol = rtol * float(np.abs(ev).max())
        n_neg = int((ev < -tol).sum())
        n_mv, secs = cost.done()
        return HessianIndex(n_neg / op.dim, n_neg, op.dim, tol, "dense", ev, n_mv, secs,
                            float((np.abs(ev) <= tol).mean()))
    nodes, weights, _ = slq_nodes(op.matmat, op.dim, n_vectors, n_steps, seed, dtype=op.dtype, device=op.device)
    tol = rtol * float(np.abs(nodes).max())
    frac = float(weights[nodes < -tol].sum())
    n_mv, secs = cost.done()
    return HessianIndex(frac, frac * op.dim, op.dim, tol, "slq", None, n_mv, secs,
                        float(weights[np.abs(nodes) <= tol].sum()))


__all__ = [
    "CURVATURES", "CurvatureError", "CurvatureOperator", "HessianOperator", "GaussNewtonOperator",
    "ResidualOperator", "curvature_operator", "resolve_loss",
    "HessianEigs", "HessianDensity", "HessianTrace", "HessianIndex",
    "hessian_eigs", "hessian_density", "hessian_trace", "hessian_index",
]
