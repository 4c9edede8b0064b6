"""The empirical neural tangent kernel: Gram matrices, spectra with decay fits, and kernel regression.

    from overparam.measure.ntk import ntk_gram, ntk_eigs, ntk_regression
    K = ntk_gram(model, X[:500]).gram                       # (500, 500), trace over outputs
    spec = ntk_eigs(model, X[:500]); spec.decay.better      # "power" or "exponential"

The NTK of a network f(x; θ) is Θ(x, x') = J(x) J(x')ᵀ with J = ∂f/∂θ (O outputs × P parameters).
Modes: ``"full"`` gives Θ as (N1, N2, O, O); ``"diagonal"`` keeps Θ[o, o] as (N1, N2, O); ``"trace"``
sums the diagonal over outputs, (N1, N2).

Two methods (the torch.func recipe and neural-tangents' JACOBIAN_CONTRACTION / NTK_VECTOR_PRODUCTS):

* ``"jacobian"`` -- per-example Jacobians by ``vmap(jacrev)``, then one matrix product per block.
  Cost: (N1 + N2)·O·[FP] to build Jacobians, plus N1·N2·O·P ("trace"/"diagonal") or N1·N2·O²·P
  ("full") for the contraction.
* ``"ntk-vp"`` -- Jacobian rows of the row block (N1·O·[FP]) used as tangents of a ``jvp`` over the
  column block; no column Jacobian is formed. Cost: N1·O·[FP] + N1·N2·O·[FP].

[FP] is the cost of one forward pass on one example, counted (FLOPs of matmuls and convolutions) by
``torch.utils.flop_counter`` on one example; P the number of differentiated parameters; the contraction
is counted at 2 FLOPs per multiply-add like [FP]. ``"auto"`` evaluates both formulas and takes ntk-vp
only when 7 × its FLOPs (``NTK_VP_EFFICIENCY``: a vmapped jvp runs ~7× below the FLOP rate of the one
big BLAS product of the contraction, as measured by benchmarks/bench_ntk.py) is below the Jacobian
method's. Consequences: the Jacobian contraction wins for "trace"/"diagonal" on every model (the
contraction per pair costs 2·O·P, ntk-vp O·[FP] ≥ 2·O·P) and for convolutional nets in every mode
(weight sharing makes [FP] >> P); NTK-vector products win only for the full O×O kernel of fully
connected nets with many outputs (O ≳ 7).

Memory: the Gram is filled in blocks of ``block`` examples. The jacobian method holds one row block of
Jacobians (block·O·P numbers), one column block, and caches column blocks while the total stays under
``memory`` bytes: when N·O·P numbers fit, every Jacobian is computed once; beyond, the blocks that do
not fit are recomputed for each row block (``NTKResult.jacobians`` counts the work). The ntk-vp method
holds one block of tangents plus the jvp's activations. When ``block`` is None it is chosen from
``memory``, so a Gram of several thousand points never needs the full N·O·P Jacobian in memory.
Symmetric Grams (x2 is None) compute only the upper block triangle and mirror it.

Float64: pass ``dtype=torch.float64``; the model is not modified (parameters are cast copies used
through ``torch.func.functional_call``). Parameters not in ``params`` and buffers stay fixed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from overparam.measure.data import iter_batches
from overparam.measure.ntk_kernels import (
    DecayFit,
    KernelRegression,
    KernelSpectrum,
    fit_decay,
    gaussian_kernel,
    kernel_regression,
    kernel_spectrum,
    laplace_kernel,
    median_distance,
)

MODES = ("trace", "full", "diagonal")
METHODS = ("auto", "jacobian", "ntk-vp")
# A jvp over a block runs at about 1/7 of the FLOP rate of the Jacobian method's single BLAS matrix product
# (measured on CPU by benchmarks/bench_ntk.py: MLP and CNN, float64); auto weighs ntk-vp's FLOPs by it.
NTK_VP_EFFICIENCY = 7.0
DEFAULT_MEMORY = 2 << 30  # bytes for the blocks (and cached blocks) of Jacobians / tangents


@dataclass
class NTKResult:
    """An empirical NTK Gram matrix and what it cost.

    gram: (N1, N2) for "trace", (N1, N2, O) for "diagonal", (N1, N2, O, O) for "full".
    cost: the two methods' estimated FLOPs (the rule ``auto`` used) and the forward cost [FP].
    """

    gram: torch.Tensor
    mode: str
    method: str
    seconds: float
    blocks: int                 # block products computed
    block: int                  # examples per block
    n_params: int
    n_outputs: int
    jacobians: int = 0          # per-example Jacobians computed (> N1 + N2 when blocks were recomputed)
    cost: dict[str, Any] = field(default_factory=dict)   # FLOP estimates and the auto choice

    def numpy(self) -> np.ndarray:
        return self.gram.detach().cpu().numpy()

    def matrix(self) -> torch.Tensor:
        """The Gram as a 2-D matrix: (N1, N2) for trace, (N1·O, N2·O) for full (example-major)."""
        g = self.gram
        if self.mode == "trace":
            return g
        if self.mode == "full":
            n1, n2, o, _ = g.shape
            return g.permute(0, 2, 1, 3).reshape(n1 * o, n2 * o)
        raise ValueError("a diagonal-mode NTK has no single matrix; use gram[..., o] for output o")


# ---------------------------------------------------------------------------------------------- helpers


def _as_inputs(x: Any) -> torch.Tensor:
    """Inputs as one tensor: a tensor, or the x of (X, y) / TensorDataset / DataLoader batches."""
    if torch.is_tensor(x):
        return x
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    return torch.cat([xb for xb, _ in iter_batches(x)], dim=0)


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _split_params(model: nn.Module, params: Sequence[str] | None, dtype: torch.dtype):
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        names = list(params)
        unknown = [n for n in names if n not in named]
        if unknown:
            raise ValueError(f"params: unknown parameter name(s) {unknown}; the model has: {', '.join(named)}")
    if not names:
        raise ValueError("params: no parameters to differentiate (none requires grad, or an empty subset)")
    cast = lambda t: t.detach().to(dtype) if torch.is_floating_point(t) else t.detach()  # noqa: E731
    diff = {n: cast(named[n]) for n in names}
    fixed = {n: cast(p) for n, p in named.items() if n not in diff}
    fixed.update({n: cast(b) for n, b in model.named_buffers()})
    return diff, fixed


def _model_function(model: nn.Module, fixed: dict[str, torch.Tensor]):
    """f(params, x) -> flat outputs of one example (x without its batch dimension)."""

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**p, **fixed}, (x.unsqueeze(0),)).reshape(-1)

    return f


def forward_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass on one example (matmuls and convolutions), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x[:1])
    except Exception:  # an op the counter cannot trace: fall back to 2 FLOPs per parameter
        return 0.0
    return float(counter.get_total_flops())


def _activation_numel(model: nn.Module, x: torch.Tensor) -> int:
    """Numbers a forward pass of one example produces in its leaf modules (the jvp's working memory)."""
    total = [0]

    def hook(_m, _i, out):
        if torch.is_tensor(out):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 1)


def ntk_costs(n1: int, n2: int, n_outputs: int, n_params: int, fp: float, mode: str) -> dict[str, float]:
    """The two methods' FLOP estimates (2 FLOPs per multiply-add, like ``fp``) and the rule of "auto".

    auto takes ntk-vp when ``NTK_VP_EFFICIENCY`` × its FLOPs < the jacobian's FLOPs.
    """
    o_eff = n_outputs if mode == "full" else 1
    jac = (n1 + n2) * n_outputs * fp + 2.0 * n1 * n2 * n_outputs * o_eff * n_params
    vp = n1 * n_outputs * fp + n1 * n2 * n_outputs * fp
    return {"jacobian": jac, "ntk-vp": vp, "forward_flops": fp,
            "choice": "ntk-vp" if NTK_VP_EFFICIENCY * vp < jac else "jacobian"}


def _jacobian_block(f, p, xb) -> dict[str, torch.Tensor]:
    """Per-example Jacobians {name: (b, O, numel)}."""
    jac = vmap(jacrev(f), (None, 0))(p, xb)
    return {k: v.reshape(v.shape[0], v.shape[1], -1) for k, v in jac.items()}


def _contract(ja: dict[str, torch.Tensor], jb: dict[str, torch.Tensor], mode: str,
              symmetrize: bool = False) -> torch.Tensor:
    """Σ over parameter tensors of Jacobian products, accumulated in place in one BLAS-friendly layout:
    (na, nb) for trace, (O, na, nb) for diagonal, (na·O, nb·O) for full; converted to the mode's shape once."""
    first = next(iter(ja.values()))
    na, o = first.shape[:2]
    nb = next(iter(jb.values())).shape[0]
    if mode == "diagonal":
        out = torch.zeros(o, na, nb, dtype=first.dtype)
        for k, a in ja.items():
            out.baddbmm_(a.transpose(0, 1), jb[k].permute(1, 2, 0))
        if symmetrize:
            out = 0.5 * (out + out.transpose(1, 2))
        return out.permute(1, 2, 0)
    rows, cols = (na, nb) if mode == "trace" else (na * o, nb * o)
    out = torch.zeros(rows, cols, dtype=first.dtype)
    for k, a in ja.items():
        out.addmm_(a.reshape(rows, -1), jb[k].reshape(cols, -1).T)
    if symmetrize:
        out = 0.5 * (out + out.T)
    return out if mode == "trace" else out.reshape(na, o, nb, o).permute(0, 2, 1, 3)


def _ntk_vp_block(f, p, ja: dict[str, torch.Tensor], xb: torch.Tensor, mode: str) -> torch.Tensor:
    """Θ between the examples whose Jacobian rows are ``ja`` and the batch ``xb``, by jvps."""
    na, o = next(iter(ja.values())).shape[:2]
    shapes = {k: v.shape for k, v in p.items()}
    tangents = {k: v.reshape(na * o, *shapes[k]) for k, v in ja.items()}
    g = lambda q: vmap(f, (None, 0))(q, xb)  # noqa: E731  (nb, O)
    out = vmap(lambda t: jvp(g, (p,), (t,))[1])(tangents)  # (na·O, nb, O)
    full = out.reshape(na, o, xb.shape[0], o).permute(0, 2, 1, 3)  # K[a, b, o, q] = J_a,o · J_b,q
    if mode == "full":
        return full
    diag = torch.diagonal(full, dim1=2, dim2=3)
    return diag if mode == "diagonal" else diag.sum(-1)


def _ranges(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, stop)) for s in range(start, stop, step)]


# ---------------------------------------------------------------------------------------------- gram


def ntk_gram(model: nn.Module, x1: Any, x2: Any = None, *, mode: str = "trace", method: str = "auto",
             block: int | None = None, params: Sequence[str] | None = None, dtype: torch.dtype | None = None,
             memory: int = DEFAULT_MEMORY) -> NTKResult:
    """Empirical NTK between the inputs ``x1`` and ``x2`` (``x1`` with itself when ``x2`` is None).

    x1, x2: input tensors (N, ...) or (X, y) / TensorDataset / DataLoader (inputs are gathered).
    mode: "trace" (N1, N2) | "diagonal" (N1, N2, O) | "full" (N1, N2, O, O); see the module docstring.
    method: "jacobian" | "ntk-vp" | "auto" (the cheaper by the documented cost formulas).
    block: examples per block of rows/columns; None picks the largest that keeps the working set
        under ``memory`` bytes.
    params: names (as in ``model.named_parameters()``) to differentiate; None = all that require grad.
    dtype: compute dtype (e.g. torch.float64); None = the model's.
    The model is called as is (put it in eval mode if it has dropout or batch norm).
    """
    _check_choice("mode", mode, MODES)
    _check_choice("method", method, METHODS)
    if block is not None and (not isinstance(block, int) or block < 1):
        raise ValueError(f"block: must be a positive integer, got {block!r}")
    start = time.perf_counter()
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("model: has no parameters")
    dtype = dtype or first.dtype
    a = _as_inputs(x1).to(dtype)
    symmetric = x2 is None
    b = a if symmetric else _as_inputs(x2).to(dtype)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"x1 and x2: example shapes differ, {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("x1, x2: need at least one example each")

    p, fixed = _split_params(model, params, dtype)
    f = _model_function(model, fixed)
    with torch.no_grad():
        n_out = f(p, a[0]).numel()
    n_params = sum(v.numel() for v in p.values())
    fp = forward_flops(model, a[:1].to(first.dtype)) or 2.0 * n_params
    costs = ntk_costs(n1, n2, n_out, n_params, fp, mode)
    chosen = method if method != "auto" else costs["choice"]

    itemsize = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    if block is None:
        per_example = n_out * n_params * itemsize
        if chosen == "jacobian":
            block = min(memory // (4 * per_example), 512)
        else:  # tangents b·O·P plus jvp activations b²·O·A (×3 for autograd's working copies)
            act = 3 * _activation_numel(model, a[:1].to(first.dtype)) * n_out * itemsize
            block = int((-per_example + math.sqrt(per_example ** 2 + 4 * act * memory)) / (2 * act))
        block = int(max(1, min(block, max(n1, n2))))

    shape = {"trace": (n1, n2), "diagonal": (n1, n2, n_out), "full": (n1, n2, n_out, n_out)}[mode]
    gram = torch.empty(shape, dtype=dtype)
    n_blocks, n_jac = 0, 0
    # Column-block Jacobians are kept while they fit in ``memory`` (minus the row block), so with room
    # every example's Jacobian is computed once; beyond it, blocks are recomputed per row block.
    cache: dict[int, dict[str, torch.Tensor]] = {}
    block_bytes = lambda j: sum(v.numel() for v in j.values()) * itemsize  # noqa: E731
    for r0, r1 in _ranges(0, n1, block):
        jr = cache.pop(r0, None) if symmetric else None
        if jr is None:
            jr, n_jac = _jacobian_block(f, p, a[r0:r1]), n_jac + (r1 - r0)
        room = memory - block_bytes(jr) - sum(block_bytes(j) for j in cache.values())
        for c0, c1 in _ranges(r0 if symmetric else 0, n2, block):
            xc = b[c0:c1]
            if chosen == "jacobian":
                if symmetric and c0 == r0:
                    jc = jr
                elif c0 in cache:
                    jc = cache[c0]
                else:
                    jc, n_jac = _jacobian_block(f, p, xc), n_jac + (c1 - c0)
                    if block_bytes(jc) <= room:
                        cache[c0], room = jc, room - block_bytes(jc)
                # a diagonal block is symmetric up to rounding: made exact inside
                part = _contract(jr, jc, mode, symmetrize=symmetric and c0 == r0)
            else:
                part = _ntk_vp_block(f, p, jr, xc, mode)
                if symmetric and c0 == r0:
                    part = 0.5 * (part + (part.transpose(0, 1) if mode != "full" else part.permute(1, 0, 3, 2)))
            gram[r0:r1, c0:c1] = part
            if symmetric and c0 != r0:
                gram[c0:c1, r0:r1] = part.transpose(0, 1) if mode != "full" else part.permute(1, 0, 3, 2)
            n_blocks += 1
        del jr
    return NTKResult(gram=gram, mode=mode, method=chosen, seconds=time.perf_counter() - start, blocks=n_blocks,
                     block=block, n_params=n_params, n_outputs=n_out, jacobians=n_jac, cost=costs)


# ---------------------------------------------------------------------------------------------- spectrum


@dataclass
class NTKSpectrum(KernelSpectrum):
    """Eigenvalues (descending, float64) of an NTK Gram with its decay fit, and the Gram it came from."""

    ntk: NTKResult | None = None


def ntk_eigs(model: nn.Module, x: Any, *, mode: str = "trace", vectors: bool = False,
             fit: tuple[int, int | None] = (2, None), dtype: torch.dtype = torch.float64,
             **ntk_kwargs: Any) -> NTKSpectrum:
    """Eigen-decomposition (``eigh`` in float64) of the NTK on ``x`` with a decay-law fit.

    mode "trace" decomposes the N×N kernel; "full" the (N·O)×(N·O) matrix. ``fit`` = (first, last)
    1-based eigenvalue indices used by :func:`fit_decay` (last None = automatic, see there).
    Other keywords go to :func:`ntk_gram`.
    """
    if mode == "diagonal":
        raise ValueError("mode: 'diagonal' has one kernel per output; use 'trace' or 'full' for a spectrum")
    start = time.perf_counter()
    res = ntk_gram(model, x, mode=mode, dtype=dtype, **ntk_kwargs)
    spec = kernel_spectrum(res.matrix(), vectors=vectors, fit=fit)
    return NTKSpectrum(eigenvalues=spec.eigenvalues, eigenvectors=spec.eigenvectors, decay=spec.decay,
                       seconds=time.perf_counter() - start, ntk=res)


# ---------------------------------------------------------------------------------------------- regression


def _targets(y: torch.Tensor, n_classes: int | None, dtype) -> torch.Tensor:
    if torch.is_floating_point(y):
        return (y.reshape(len(y), -1)).to(dtype)
    k = n_classes if n_classes is not None else int(y.max()) + 1
    return nn.functional.one_hot(y.long(), k).to(dtype)


def ntk_regression(model: nn.Module, X_train: Any, y_train: torch.Tensor, X_test: Any,
                   y_test: torch.Tensor | None = None, *, n_classes: int | None = None, ridge: float = 1e-6,
                   center: bool = True, dtype: torch.dtype = torch.float64, **ntk_kwargs: Any) -> KernelRegression:
    """Kernel regression with the (trace) NTK of ``model`` at its current weights.

    Predictions f(x) = f0(x) + Θ(x, X) (Θ(X, X) + ridge·mean(diag Θ)·I)⁻¹ (Y − f0(X)), the limit of
    gradient flow on the MSE of the network linearized at its current weights (lazy training);
    ``center=False`` drops f0 (plain kernel ridge regression with the NTK). Classification labels are
    regressed as one-hot vectors and predicted by argmax. Θ is the trace NTK divided by O (the full NTK
    of a wide net at init is ≈ Θ_trace/O ⊗ I). Compare with :func:`kernel_regression` on
    :func:`laplace_kernel` / :func:`gaussian_kernel` for the baselines.
    """
    start = time.perf_counter()
    Xa, Xb = _as_inputs(X_train), _as_inputs(X_test)
    if len(Xa) != len(y_train):
        raise ValueError(f"X_train has {len(Xa)} rows but y_train has {len(y_train)}")
    both = torch.cat([Xa, Xb], 0)
    res = ntk_gram(model, both, dtype=dtype, **ntk_kwargs)
    n = len(Xa)
    K = res.gram / res.n_outputs
    Y = _targets(y_train, n_classes, dtype)
    f0 = None
    if center:
        first = next(model.parameters())
        with torch.no_grad():
            f0 = model(both.to(first.dtype)).reshape(len(both), -1).to(dtype)
        if f0.shape[1] != Y.shape[1]:
            raise ValueError(f"center: the model has {f0.shape[1]} outputs but the targets have {Y.shape[1]} columns")
    out = kernel_regression(K[:n, :n], K[n:, :n], Y, ridge=ridge, y_train=y_train, y_test=y_test,
                            offset_train=None if f0 is None else f0[:n], offset_test=None if f0 is None else f0[n:])
    out.seconds = time.perf_counter() - start
    out.kernel = "ntk"
    return out


__all__ = [
    "DecayFit", "KernelRegression", "KernelSpectrum", "METHODS", "MODES", "NTKResult", "NTKSpectrum",
    "fit_decay", "forward_flops", "gaussian_kernel", "kernel_regression", "kernel_spectrum", "laplace_kernel",
    "median_distance", "ntk_costs", "ntk_eigs", "ntk_gram", "ntk_regression",
]
