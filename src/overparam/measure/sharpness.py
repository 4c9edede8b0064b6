"""Sharpness of a solution: Keskar et al. 2016's box sharpness, the top Hessian eigenvalue, and Jiang et al.
2019's PAC-Bayes flatness -- three answers to "how fast does the loss rise around these weights?".

* ``sharpness(model, loss_fn, data, eps=1e-3, subspace=None)`` -- Keskar et al. 2016 (arXiv 1609.04836, eq. 4):
  ``100 * (max_{delta in C} L(w + delta) - L(w)) / (1 + L(w))`` over the box
  ``C = {|delta_i| <= eps (|w_i| + 1)}`` (full space), or, with ``subspace=p``, over ``delta = A y`` for a random
  ``P x p`` matrix ``A`` with the box ``|y_i| <= eps (|(A^+ w)_i| + 1)``. The inner maximum is solved with
  SciPy's L-BFGS-B on ``-L`` with exact float64 gradients from autograd, started from a seeded uniform point in
  the box (at a minimum the gradient is zero, so starting at ``delta = 0`` would never move).
* ``pacbayes_sigma(...)`` -- Jiang et al. 2019 (arXiv 1912.02178, sec. C): the largest sigma such that the
  Monte Carlo mean of ``L(w + u) - L(w)`` stays within ``tolerance``, with ``u_i ~ N(0, sigma^2)``
  ("pacbayes.flatness" = 1/sigma^2) or magnitude-aware ``u_i ~ N(0, sigma'^2 w_i^2 + eps^2)``
  ("pacbayes.mag.flatness" = 1/sigma'^2); bisection in log sigma with common random numbers (the same normal
  draws at every sigma, so the deviation is a smooth, nearly monotone function of sigma).

All losses are means over the whole data, streamed in batches with ``iter_batches``; the model is never
modified (evaluation goes through ``torch.func.functional_call`` on float64 copies of the parameters).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn
from torch.func import functional_call

from overparam.measure.data import iter_batches
from overparam.measure.hessian import hessian_eigs
from overparam.measure.hessian_operator import resolve_loss
from overparam.train.parallel import torch_threads

MODES = ("eval", "train")


@contextmanager
def _mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Evaluate in the requested mode, then restore each submodule's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _errors(out: torch.Tensor, y: torch.Tensor) -> float | None:
    """Number of misclassified examples, or None when the task is not classification by integer labels."""
    if torch.is_floating_point(y) or out.ndim != 2:
        return None
    if out.shape[1] == 1:
        return float(((out[:, 0] > 0).long() != y.reshape(-1)).sum())
    return float((out.argmax(1) != y.reshape(-1)).sum())


class FlatLoss:
    """The mean loss over all the data as a function of a flat parameter vector (float64 by default).

    Shared by the geometry instruments (sharpness, interpolate, landscape). ``buffers`` (e.g. BatchNorm running
    statistics) are the model's own unless replaced per call. Counts full-data evaluations and seconds.
    """

    def __init__(self, model: nn.Module, loss_fn, data, *, dtype: torch.dtype = torch.float64,
                 batch_size: int = 2048, mode: str = "eval", num_threads: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not allowed; choose one of: {', '.join(MODES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.model, self.data, self.dtype, self.mode = model, data, dtype, mode
        self.batch_size, self.num_threads = int(batch_size), num_threads
        self.loss_fn = resolve_loss(loss_fn)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.dim = sum(self.sizes)
        self.w0 = torch.cat([p.detach().to(dtype).reshape(-1) for _, p in named])
        self.buffers = {n: (b.detach().to(dtype) if torch.is_floating_point(b) else b)
                        for n, b in model.named_buffers()}
        self.buffers.update({n: p.detach().to(dtype) for n, p in model.named_parameters() if not p.requires_grad})
        self.n_evals = 0
        self.seconds = 0.0

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def _passes(self, flat: torch.Tensor, buffers, grad: bool):
        state = self.unflatten(flat)
        state.update(self.buffers if buffers is None else buffers)
        with _mode(self.model, self.mode):
            for x, y in iter_batches(self.data, self.batch_size, self.dtype):
                with torch.set_grad_enabled(grad):
                    out = functional_call(self.model, state, (x,))
                    yield len(x), out, y, self.loss_fn(out, y)

    def __call__(self, flat, buffers=None, error: bool = False):
        """Mean loss at ``flat`` (and the error rate when ``error=True``; nan if not a classification task)."""
        t0 = time.perf_counter()
        flat = torch.as_tensor(flat, dtype=self.dtype)
        total, wrong, n, classif = 0.0, 0.0, 0, True
        with torch_threads(self.num_threads):
            for nb, out, y, loss in self._passes(flat, buffers, grad=False):
                total += float(loss) * nb
                n += nb
                if error:
                    e = _errors(out, y)
                    classif = classif and e is not None
                    wrong += e or 0.0
        self._count(n, t0)
        if error:
            return total / n, (wrong / n if classif else float("nan"))
        return total / n

    def loss_and_grad(self, flat) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        flat = torch.as_tensor(flat, dtype=self.dtype).detach().clone().requires_grad_(True)
        total, grad, n = 0.0, torch.zeros(self.dim, dtype=self.dtype), 0
        with torch_threads(self.num_threads):
            for nb, _, _, loss in self._passes(flat, None, grad=True):
                grad += nb * torch.autograd.grad(loss, flat)[0]
                total += float(loss.detach()) * nb
                n += nb
        self._count(n, t0)
        return total / n, grad / n

    def _count(self, n: int, t0: float) -> None:
        if n == 0:
            raise ValueError("data is empty")
        self.n_evals += 1
        self.seconds += time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------- sharpness
@dataclass
class Sharpness:
    sharpness: float            # Keskar's 100 (max L - L) / (1 + L)
    loss: float                 # L(w)
    max_loss: float             # the largest loss L-BFGS-B found in the box
    eps: float
    subspace: int | None        # None: full space; p: random p-dimensional subspace
    delta_norm: float           # ||delta|| of the maximizer
    at_bound: float             # fraction of the box coordinates at a face of the box
    top_eigenvalue: float | None
    pacbayes: "PacBayesSigma | None"
    n_params: int
    n_iterations: int
    n_loss_evals: int           # full-data loss (and gradient) evaluations, Hessian and PAC-Bayes excluded
    seconds: float
    converged: bool
    message: str = ""
    cost: dict = field(default_factory=dict)   # per part: {"box": (evals, s), "hessian": (matvecs, s), ...}


def sharpness(model: nn.Module, loss_fn, data, eps: float = 1e-3, subspace: int | None = None, seed: int = 0,
              maxiter: int = 100, hessian: bool = True, pacbayes: bool = True, pacbayes_kw: dict | None = None,
              dtype: torch.dtype = torch.float64, batch_size: int = 2048, mode: str = "eval",
              num_threads: int | None = None) -> Sharpness:
    """Keskar et al.'s sharpness at the model's weights, with the top Hessian eigenvalue and Jiang et al.'s
    magnitude-aware PAC-Bayes sigma for comparison (``hessian=False`` / ``pacbayes=False`` skip them).

    ``maxiter``: L-BFGS-B iterations (Keskar et al. ran a few; the max is a lower bound of the true one when
    stopped early, and any local maximizer is one too). ``mode="eval"`` evaluates Dropout/BatchNorm in eval mode.
    """
    if not eps > 0:
        raise ValueError(f"eps: must be > 0, got {eps}")
    if maxiter < 1:
        raise ValueError(f"maxiter: must be >= 1, got {maxiter}")
    f = FlatLoss(model, loss_fn, data, dtype=dtype, batch_size=batch_size, mode=mode, num_threads=num_threads)
    t0 = time.perf_counter()
    w = f.w0.to(torch.float64).numpy()
    P = f.dim
    rng = np.random.default_rng(seed)
    if subspace is None:
        A = None
        bound = eps * (np.abs(w) + 1.0)
    else:
        p = int(subspace)
        if not 1 <= p <= P:
            raise ValueError(f"subspace: must be an integer in [1, {P}] (the number of parameters), got {subspace}")
        A = rng.standard_normal((P, p))
        Aw = np.linalg.lstsq(A, w, rcond=None)[0]          # A^+ w
        bound = eps * (np.abs(Aw) + 1.0)
    loss0 = f(torch.from_numpy(w))
    y0 = rng.uniform(-bound, bound)

    def neg(y: np.ndarray):
        delta = y if A is None else A @ y
        val, g = f.loss_and_grad(torch.from_numpy(w + delta))
        g = g.to(torch.float64).numpy()
        return -val, -(g if A is None else A.T @ g)

    res = minimize(neg, y0, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound)),
                   options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})
    max_loss = max(-float(res.fun), loss0)
    y = res.x
    delta = y if A is None else A @ y
    box_evals, box_secs = f.n_evals, time.perf_counter() - t0
    cost = {"box": (box_evals, box_secs)}
    top = None
    if hessian:
        h = hessian_eigs(model, loss_fn, data, k=1, dtype=dtype, batch_size=batch_size,
                         num_threads=num_threads, seed=seed)
        top = float(h.values[0])
        cost["hessian"] = (h.n_matvecs, h.seconds)
    pb = None
    if pacbayes:
        kw = {"magnitude": True, "seed": seed, **(pacbayes_kw or {})}
        pb = pacbayes_sigma(model, loss_fn, data, dtype=dtype, batch_size=batch_size, mode=mode,
                            num_threads=num_threads, **kw)
        cost["pacbayes"] = (pb.n_loss_evals, pb.seconds)
    return Sharpness(
        sharpness=100.0 * (max_loss - loss0) / (1.0 + loss0), loss=loss0, max_loss=max_loss, eps=eps,
        subspace=None if A is None else A.shape[1], delta_norm=float(np.linalg.norm(delta)),
        at_bound=float(np.mean(np.isclose(np.abs(y), bound, rtol=1e-9, atol=0))), top_eigenvalue=top,
        pacbayes=pb, n_params=P, n_iterations=int(res.nit), n_loss_evals=box_evals,
        seconds=time.perf_counter() - t0, converged=bool(res.success), message=str(res.message), cost=cost)


# ------------------------------------------------------------------------------------------------- PAC-Bayes
@dataclass
class PacBayesSigma:
    sigma: float                # the largest sigma with mean deviation <= tolerance (bisection's lower end)
    magnitude: bool             # True: u_i ~ N(0, sigma^2 w_i^2 + eps^2); False: u_i ~ N(0, sigma^2)
    flatness: float             # 1 / sigma^2: Jiang's "pacbayes.mag.flatness" (or "pacbayes.flatness")
    deviation: float            # the measured mean deviation at sigma
    tolerance: float
    on: str                     # "loss" or "error": what deviates
    eps: float
    n_samples: int
    base: float                 # L(w) (or error(w))
    history: list               # (sigma, deviation) per bisection step
    n_loss_evals: int
    seconds: float


def pacbayes_sigma(model: nn.Module, loss_fn, data, magnitude: bool = True, tolerance: float = 0.1,
                   on: str = "loss", eps: float = 1e-3, n_samples: int = 10, n_bisect: int = 20,
                   sigma_range: tuple[float, float] = (1e-6, 10.0), seed: int = 0,
                   dtype: torch.dtype = torch.float64, batch_size: int = 2048, mode: str = "eval",
                   num_threads: int | None = None) -> PacBayesSigma:
    """Jiang et al. 2019's sigma for the sharpness-based PAC-Bayes measures, by bisection in log sigma.

    ``on="loss"`` bounds the rise of the mean loss by ``tolerance``; ``on="error"`` the rise of the training
    error (Jiang et al. use a 0.1 deviation of the training accuracy). ``eps`` is the magnitude-aware floor
    (1e-3 as in the paper); it is ignored when ``magnitude=False``.
    """
    if on not in ("loss", "error"):
        raise ValueError(f"on: {on!r} is not allowed; choose one of: loss, error")
    if not tolerance > 0:
        raise ValueError(f"tolerance: must be > 0, got {tolerance}")
    lo, hi = map(float, sigma_range)
    if not 0 < lo < hi:
        raise ValueError(f"sigma_range: need 0 < low < high, got {sigma_range}")
    f = FlatLoss(model, loss_fn, data, dtype=dtype, batch_size=batch_size, mode=mode, num_threads=num_threads)
    t0 = time.perf_counter()
    w = f.w0
    gen = torch.Generator().manual_seed(seed)
    Z = torch.randn(n_samples, f.dim, generator=gen, dtype=torch.float64).to(dtype)

    def value(flat):
        loss, err = f(flat, error=True)
        if on == "error" and math.isnan(err):
            raise ValueError("on='error' needs a classification task (integer labels)")
        return loss if on == "loss" else err

    base = value(w)

    def deviation(s: float) -> float:
        scale = torch.sqrt(s ** 2 * w ** 2 + eps ** 2) if magnitude else torch.full_like(w, s)
        return float(np.mean([value(w + scale * z) for z in Z])) - base

    history = []
    d_hi = deviation(hi)
    history.append((hi, d_hi))
    if d_hi <= tolerance:
        lo = hi                  # flat beyond the search range: report its top
    else:
        d_lo = deviation(lo)
        history.append((lo, d_lo))
        if d_lo > tolerance:
            hi = lo              # sharp below the search range: report its bottom
        for _ in range(n_bisect if lo < hi else 0):
            mid = math.sqrt(lo * hi)
            d = deviation(mid)
            history.append((mid, d))
            if d > tolerance:
                hi = mid
            else:
                lo = mid
    dev = next((d for s, d in reversed(history) if s == lo), float("nan"))
    return PacBayesSigma(sigma=lo, magnitude=magnitude, flatness=1.0 / lo ** 2, deviation=dev, tolerance=tolerance,
                         on=on, eps=eps, n_samples=n_samples, base=base, history=history, n_loss_evals=f.n_evals,
                         seconds=time.perf_counter() - t0)


__all__ = ["FlatLoss", "Sharpness", "sharpness", "PacBayesSigma", "pacbayes_sigma"]
