"""``x @ W`` for a weight ``W`` held as a tensor-train matrix: the ways to contract, their cost, and the choice.

The cores ``G_k`` have shape ``(r_{k-1}, n_k, m_k, r_k)`` with ``r_0 = r_d = 1``; ``W`` is ``(prod n_k, prod m_k)``
with row-major multi-indices (see :mod:`overparam.models.tt`). The same product can be computed in several ways
whose speed depends on the shapes, the ranks, the batch and whether a backward pass follows:

``"sequential"``
    One core at a time, each step one matrix product of the core with the running tensor and one permutation.
    Fewest multiply-adds at low rank and small batch, but ``d`` small-``K`` products and ``d - 1`` copies of an
    intermediate that is ``r`` times the input: memory-bound at large batch.
``"grouped"``
    Consecutive cores are first merged into larger cores (a partial rebuild of ``W``, cheap at low rank), then
    contracted with the input group by group: fewer, larger and faster matrix products. E.g. 4 cores as 2 + 2.
``"einsum"``
    The contraction path that ``opt_einsum`` finds (minimum multiply-adds over all pairwise orders, cores with
    cores included), run by ``torch.tensordot``.
``"dense"``
    Rebuild ``W`` once per call and do one GEMM; its backward is ``x^T g`` (one GEMM) then the rebuild's cheap
    reverse. Wins when the batch is large enough that one efficient GEMM beats many inefficient ones.

Every path may also run right to left (``reverse``: the last core first), which needs fewer multiply-adds when
the input and output modes differ. ``"auto"`` picks the plan with the smallest predicted time under a roofline
:class:`CostModel` (multiply-adds at a GEMM rate, memory traffic at cache or main-memory bandwidth, a fixed cost
per kernel and per contiguous run a permutation moves), counting the backward pass when gradients are needed; the
choice is cached per (modes, ranks, batch, dtype, device, threads, gradient) key. The constants were fitted on a
CPU (one thread, MKL); other devices use them too. ``benchmarks/bench_tt.py`` checks the model's choice against
measurements and ``--fit`` refits it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

PATHS = ("sequential", "grouped", "einsum", "dense")
NARROW_OUTPUT = 16     # last output mode below which the chain's last product is computed transposed
CONTRACTIONS = ("auto", *PATHS)

__all__ = ["CONTRACTIONS", "PATHS", "CostModel", "Counts", "Plan", "candidate_plans", "check_contraction",
           "choose_plan", "clear_plan_cache", "merge_cores", "plan_cost", "plan_counts", "plan_macs", "run_plan",
           "tt_matmul"]


@dataclass(frozen=True)
class Plan:
    """One way to compute ``x @ W``: the path, the sizes of the consecutive core groups (sequential: all 1;
    dense: one group of ``d``; unused by einsum), and the direction."""

    path: str
    groups: tuple[int, ...]
    reverse: bool = False

    def __str__(self) -> str:
        if self.path == "einsum":
            return "einsum"
        tail = "+".join(map(str, self.groups)) if self.path == "grouped" else ""
        return self.path + (f"({tail})" if tail else "") + (" R2L" if self.reverse else "")


# ------------------------------------------------------------------------------------------------ execution
def merge_cores(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Consecutive cores merged into one core ``(r_first, prod n, prod m, r_last)`` (all of them: ``W`` itself,
    as ``(1, N, M, 1)``). Cost: one small-``K`` product and one copy per merged core."""
    w = cores[0]
    for core in cores[1:]:
        r0, n, m, r = w.shape
        _, n2, m2, r1 = core.shape
        w = (w.reshape(-1, r) @ core.reshape(r, -1)).reshape(r0, n, m, n2, m2, r1)
        w = w.transpose(2, 3).reshape(r0, n * n2, m * m2, r1)
    return w


def _chain(x: torch.Tensor, cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` (b, prod n) @ the TT matrix of ``cores``, one core at a time, left to right -> (b, prod m)."""
    b = x.shape[0]
    if len(cores) == 1:
        return x @ cores[0].reshape(cores[0].shape[1], cores[0].shape[2])
    in_modes = [int(c.shape[1]) for c in cores]
    # a: rows (r_{k-1}, i_k), columns (j_1..j_{k-1}, i_{k+1}..i_d, batch). The batch-carrying axis stays innermost,
    # so each step's permutation moves contiguous blocks, and every product is a plain 2-D GEMM (so is its
    # backward: no broadcast batched products, whose core gradient would be a sum over a batch of products).
    rest = x.shape[1] * b // in_modes[0]
    a = x.t().reshape(in_modes[0], rest)
    done = 1                                                           # prod(m_1..m_{k-1})
    for k, core in enumerate(cores[:-1]):
        r0, n, m, r1 = core.shape
        a = core.permute(2, 3, 0, 1).reshape(m * r1, r0 * n) @ a         # (j_k, r_k, j_<k, i_>k, batch)
        n_next = in_modes[k + 1]
        rest //= n_next
        a = a.reshape(m, r1, done, n_next, rest).permute(1, 3, 2, 0, 4).reshape(r1 * n_next, -1)
        done *= m
    r0, n, m, _ = cores[-1].shape
    if m < NARROW_OUTPUT:
        # a.t() @ core with few columns is a slow GEMM (transposed operand, narrow result): multiply in the
        # orientation of the other steps, then a blocked 2-D transpose to (j_<d, batch, j_d)
        y = (cores[-1].reshape(r0 * n, m).t() @ a).t().reshape(done, b, m)
    else:
        y = (a.t() @ cores[-1].reshape(r0 * n, m)).reshape(done, b, m)  # rows (j_<d, batch), columns j_d
    return y.transpose(0, 1).reshape(b, done * m)


def _reversed(cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The cores of the same matrix with the mode order reversed (rows and columns indexed i_d..i_1, j_d..j_1)."""
    return [c.permute(3, 1, 2, 0) for c in reversed(cores)]


def _flip_modes(t: torch.Tensor, modes: Sequence[int]) -> torch.Tensor:
    """(b, prod modes) with multi-index (k_1..k_d) -> (b, prod modes) indexed (k_d..k_1)."""
    d = len(modes)
    return t.reshape(t.shape[0], *modes).permute(0, *range(d, 0, -1)).reshape(t.shape[0], -1)


def _einsum_equation(d: int) -> str:
    sym = [chr(c) for c in itertools.chain(range(ord("a"), ord("z") + 1), range(ord("A"), ord("Z") + 1))]
    if 3 * d + 2 > len(sym):
        raise ValueError(f"einsum contraction supports up to {(len(sym) - 2) // 3} cores, got {d}")
    b, ins, outs, rs = sym[0], sym[1:d + 1], sym[d + 1:2 * d + 1], sym[2 * d + 1:3 * d + 2]
    cores = [rs[k] + ins[k] + outs[k] + rs[k + 1] for k in range(d)]
    return ",".join([b + "".join(ins), *cores]) + "->" + b + "".join(outs)


@functools.lru_cache(maxsize=256)
def _einsum_expression(batch: int, core_shapes: tuple[tuple[int, ...], ...]):
    import opt_einsum

    d = len(core_shapes)
    shapes = [(batch, *[s[1] for s in core_shapes]), *core_shapes]
    # 'optimal' is exhaustive; past 6 cores (7 operands) its search time grows fast, 'dp' stays optimal in cost
    return opt_einsum.contract_expression(_einsum_equation(d), *shapes, optimize="optimal" if d <= 5 else "dp")


@functools.lru_cache(maxsize=256)
def _einsum_path(batch: int, core_shapes: tuple[tuple[int, ...], ...]):
    import opt_einsum

    d = len(core_shapes)
    shapes = [(batch, *[s[1] for s in core_shapes]), *core_shapes]
    return opt_einsum.contract_path(_einsum_equation(d), *shapes, shapes=True,
                                    optimize="optimal" if d <= 5 else "dp")[1]


def run_plan(plan: Plan, x: torch.Tensor, cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` (b, prod n) @ W by ``plan`` -> (b, prod m)."""
    b = x.shape[0]
    if plan.path == "einsum":
        shapes = tuple(tuple(int(s) for s in c.shape) for c in cores)
        expr = _einsum_expression(b, shapes)
        y = expr(x.reshape(b, *[s[1] for s in shapes]), *cores, backend="torch")
        return y.reshape(b, -1)
    if plan.reverse:
        x = _flip_modes(x, [int(c.shape[1]) for c in cores])
        out_modes = [int(c.shape[2]) for c in reversed(cores)]
        cores = _reversed(cores)
    starts = list(itertools.accumulate(plan.groups, initial=0))
    merged = [merge_cores(cores[s:e]) for s, e in zip(starts[:-1], starts[1:])]
    y = _chain(x, merged)
    return _flip_modes(y, out_modes) if plan.reverse else y


# ------------------------------------------------------------------------------------------------ cost model
@dataclass(frozen=True)
class CostModel:
    """Predicted seconds = multiply-adds / (``gemm_rate`` * threads) + elements moved / ``cache_bandwidth`` (tensors
    of at most ``cache_elements``) or / ``memory_bandwidth`` (larger ones) + kernels * ``overhead``.

    Elements moved: every operand and the result of a product, read and write of a copy. A roofline in sum form:
    a small-``K`` product is charged for its traffic, a large one for its multiply-adds, and an intermediate that
    spills out of the cache pays main-memory bandwidth. A permuting copy also pays ``run_overhead`` per contiguous
    run it moves (a copy in runs of 8 elements is several times slower than one in runs of 1024). The constants
    are fitted to CPU measurements of every plan (``benchmarks/bench_tt.py --fit`` refits them)."""

    gemm_rate: float = 3.6e10         # multiply-adds per second and thread
    cache_bandwidth: float = 5.2e9    # elements per second
    memory_bandwidth: float = 2.66e9  # elements per second
    overhead: float = 1.1e-5          # seconds per kernel (dispatch, autograd node)
    run_overhead: float = 8.0e-10     # seconds per contiguous run of a permuting copy
    cache_elements: int = 1 << 18     # 1 MiB of float32: this machine's L2 per core

    def seconds(self, counts: "Counts", threads: int = 1) -> float:
        return (counts.macs / (self.gemm_rate * max(threads, 1)) + counts.cached / self.cache_bandwidth
                + counts.spilled / self.memory_bandwidth + counts.kernels * self.overhead
                + counts.runs * self.run_overhead)


DEFAULT_MODEL = CostModel()


@dataclass
class Counts:
    """What a plan does: multiply-adds, elements moved in tensors that fit the cache and in larger ones, kernels,
    contiguous runs moved by permuting copies."""

    cache_elements: int = DEFAULT_MODEL.cache_elements
    macs: int = 0
    cached: int = 0
    spilled: int = 0
    kernels: int = 0
    runs: int = 0

    def _move(self, elements: int, times: int) -> None:
        if elements <= self.cache_elements:
            self.cached += times * elements
        else:
            self.spilled += times * elements

    def gemm(self, rows: int, inner: int, cols: int, times: int = 1) -> None:
        self.macs += times * rows * inner * cols
        for size in (rows * inner, inner * cols, rows * cols):
            self._move(size, times)
        self.kernels += times

    def copy(self, elements: int, run: int, times: int = 1) -> None:
        """A permuting copy of ``elements`` that are contiguous in runs of ``run`` in the source."""
        self._move(2 * elements, times)
        self.kernels += times
        self.runs += times * -(-elements // max(run, 1))


def plan_counts(plan: Plan, in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int],
                batch: int, train: bool = False, input_grad: bool = False,
                cache_elements: int = DEFAULT_MODEL.cache_elements) -> Counts:
    """What ``plan`` does on a batch: forward and, if ``train``, backward.

    Backward of a product: one product of the same size per operand that needs a gradient (the cores always, the
    input only if ``input_grad``); backward of a copy: a copy of the same size."""
    counts = Counts(cache_elements)
    fwd_bwd = 2 if train else 1

    def gemm(rows, inner, cols, from_input=False):
        counts.gemm(rows, inner, cols, 1 + (0 if not train else 1 + (input_grad or not from_input)))

    def copy(elements, run):
        counts.copy(elements, run, fwd_bwd)

    b = batch
    if plan.path == "einsum":
        info = _einsum_path(b, tuple((ranks[k], in_modes[k], out_modes[k], ranks[k + 1])
                                     for k in range(len(in_modes))))
        for step in info.contraction_list:
            # torch.tensordot: each operand permuted into GEMM order (a copy), one product, and its result
            # permuted into the order the next step (or the output) has (a copy)
            removed, eq = step[1], step[2]
            lhs, out = eq.split("->")
            ops = lhs.split(",")
            sizes = [math.prod(info.size_dict[c] for c in op) for op in ops]
            inner = math.prod(info.size_dict[c] for c in removed) if removed else 1
            for size, op in zip(sizes, ops):    # runs: the operand's last index, as a guess
                copy(size, info.size_dict[op[-1]])
            gemm(sizes[0] // inner, inner, sizes[-1] // inner if len(ops) == 2 else 1)
            copy(math.prod(info.size_dict[c] for c in out), info.size_dict[out[-1]])
        return counts
    ins, outs, rk = list(in_modes), list(out_modes), list(ranks)
    if plan.reverse:
        ins, outs, rk = ins[::-1], outs[::-1], rk[::-1]
        copy(b * math.prod(ins), 1)                                 # modes reversed: element by element
        copy(b * math.prod(outs), 1)
    starts = list(itertools.accumulate(plan.groups, initial=0))
    g_in, g_out, g_r = [], [], [1]
    for s, e in zip(starts[:-1], starts[1:]):
        n, m = ins[s], outs[s]
        for k in range(s + 1, e):                                   # merging core k into the group so far
            gemm(rk[s] * n * m, rk[k], ins[k] * outs[k] * rk[k + 1])
            copy(rk[s] * n * m * ins[k] * outs[k] * rk[k + 1], outs[k] * rk[k + 1])
            n, m = n * ins[k], m * outs[k]
        g_in.append(n), g_out.append(m), g_r.append(rk[e])
    if len(g_in) == 1:
        gemm(b, g_in[0], g_out[0], from_input=True)
        return counts
    copy(b * math.prod(g_in), 64)                                   # x transposed: a blocked 2-D transpose
    done, rest = 1, math.prod(g_in) // g_in[0]
    for k in range(len(g_in)):
        gemm(g_out[k] * g_r[k + 1], g_r[k] * g_in[k], done * rest * b, from_input=k == 0)
        if k + 1 < len(g_in):
            rest //= g_in[k + 1]
            copy(g_out[k] * g_r[k + 1] * done * g_in[k + 1] * rest * b, rest * b)
        done *= g_out[k]
    if g_out[-1] < NARROW_OUTPUT:
        copy(b * done, 64)                                          # blocked 2-D transpose of the last product
    copy(b * done, g_out[-1])                                       # output transposed to (batch, ...)
    return counts


def plan_cost(plan: Plan, in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int], batch: int,
              train: bool = False, input_grad: bool = False, threads: int = 1,
              model: CostModel | None = None) -> float:
    """Predicted seconds of ``plan`` (forward, plus backward if ``train``) under ``model`` (default: the fitted
    CPU model)."""
    model = model or DEFAULT_MODEL
    counts = plan_counts(plan, in_modes, out_modes, ranks, batch, train, input_grad, model.cache_elements)
    return model.seconds(counts, threads)


def plan_macs(plan: Plan, in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int],
              batch: int) -> int:
    """Forward multiply-adds of ``plan`` (core merges included)."""
    return plan_counts(plan, in_modes, out_modes, ranks, batch).macs


def candidate_plans(in_modes: Sequence[int], out_modes: Sequence[int], path: str | None = None) -> list[Plan]:
    """Every plan (of ``path``, or of all paths): both directions of the one-core-at-a-time and of every grouping
    into at least two groups with at least one merge, opt_einsum's path, and the dense rebuild."""
    d = len(in_modes)
    plans = []
    if path in (None, "sequential"):
        plans += [Plan("sequential", (1,) * d, rev) for rev in (False, True)] if d > 1 else [Plan("sequential", (1,))]
    if path in (None, "grouped"):
        for cuts in itertools.product((False, True), repeat=d - 1):
            sizes, size = [], 1
            for cut in cuts:
                if cut:
                    sizes.append(size)
                    size = 1
                else:
                    size += 1
            sizes.append(size)
            if 1 < len(sizes) < d:
                plans += [Plan("grouped", tuple(sizes), rev) for rev in (False, True)]
    if path in (None, "einsum"):
        plans.append(Plan("einsum", ()))
    if path in (None, "dense"):
        plans.append(Plan("dense", (d,)))
    return plans


@functools.lru_cache(maxsize=4096)
def _choose(in_modes: tuple[int, ...], out_modes: tuple[int, ...], ranks: tuple[int, ...], batch: int,
            path: str, train: bool, input_grad: bool, threads: int, device: str, dtype: str) -> Plan:
    plans = candidate_plans(in_modes, out_modes, None if path == "auto" else path)
    if not plans:
        raise ValueError(f"contraction {path!r} needs at least 3 cores, got {len(in_modes)}")
    return min(plans, key=lambda p: plan_cost(p, in_modes, out_modes, ranks, batch, train, input_grad, threads))


def check_contraction(contraction: str | Plan) -> str | Plan:
    """``contraction`` if it names a path, ``"auto"`` or is a :class:`Plan`; else ValueError naming the choices."""
    if not isinstance(contraction, Plan) and contraction not in CONTRACTIONS:
        raise ValueError(f"contraction: unknown {contraction!r}; choose one of {', '.join(CONTRACTIONS)}")
    return contraction


def choose_plan(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int], batch: int,
                contraction: str = "auto", train: bool = False, input_grad: bool = False,
                threads: int | None = None, device: str = "cpu", dtype: str = "float32") -> Plan:
    """The plan of ``contraction`` (``"auto"``: any path) with the least predicted time; cached per key.

    ``device`` and ``dtype`` are part of the cache key (the model's constants are those of a CPU)."""
    check_contraction(contraction)
    return _choose(tuple(map(int, in_modes)), tuple(map(int, out_modes)), tuple(map(int, ranks)), int(batch),
                   contraction, bool(train), bool(input_grad),
                   torch.get_num_threads() if threads is None else int(threads), device, dtype)


def clear_plan_cache() -> None:
    _choose.cache_clear()


def tt_matmul(x: torch.Tensor, cores: Sequence[torch.Tensor], contraction: str | Plan = "auto") -> torch.Tensor:
    """``x`` (..., prod n_k) @ the TT matrix of ``cores`` -> (..., prod m_k), by ``contraction`` (a path name,
    ``"auto"``, or a :class:`Plan`). Works under ``torch.func.vmap`` and for sampled (non-leaf) cores."""
    in_modes = [int(c.shape[1]) for c in cores]
    out_modes = [int(c.shape[2]) for c in cores]
    n_in, n_out = math.prod(in_modes), math.prod(out_modes)
    if x.shape[-1] != n_in:
        raise ValueError(f"TT matrix expects last dim {n_in}, got {tuple(x.shape)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, n_in)
    if isinstance(contraction, Plan):
        plan = contraction
    else:
        ranks = [int(cores[0].shape[0])] + [int(c.shape[3]) for c in cores]
        train = torch.is_grad_enabled() and (x.requires_grad or any(c.requires_grad for c in cores))
        plan = choose_plan(in_modes, out_modes, ranks, x2.shape[0], contraction, train,
                           train and x.requires_grad, device=x.device.type, dtype=str(x.dtype))
    return run_plan(plan, x2, cores).reshape(*lead, n_out)
