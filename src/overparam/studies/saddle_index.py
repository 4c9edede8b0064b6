"""Saddle index at the points where training stalls, and how often training gets stuck, across widths.

Dauphin et al. 2014 ("Identifying and attacking the saddle point problem in high-dimensional non-convex
optimization", NIPS; Sec. 4, the error-vs-index plot of critical points of small MLPs found by Newton's method)
and the talk "Over-Parametrization in Deep Learning" (Sagun et al.): at critical points of a network's loss the
index -- the fraction of negative Hessian eigenvalues -- rises with the training error, so high-error critical
points are saddles that gradient descent leaves, not minima; the chance that all eigenvalues are non-negative
falls quickly with the parameter count, so wider networks get stuck less often.

Setup (teacher-student regression): a random 2-layer ReLU *teacher* (d inputs, m hidden units) labels n Gaussian
inputs (targets standardized to unit variance); 2-layer *students* of width h from under- (h < m) to
over-parameterized (h >> m) train by full-batch gradient descent from a small initialization, many seeds per
width at once (all replicas of a width are stacked and go through a few batched tensor operations per step).

Stall points: along each trajectory the gradient norm is recorded; a stall is the end of training or an
earlier local minimum in time of the gradient norm (a plateau), below ``stall_ratio`` of the largest norm seen
so far. A plateau is near a critical point but not on it (the earlier attempt failed on exactly this), so each
stall point is refined by a damped Newton method on the gradient (Levenberg-Marquardt on g(theta) = 0:
step = -(H^2 + mu I)^-1 H g, which, like Dauphin et al.'s Newton search, converges to critical points of any
index). A refined point counts only if its gradient norm is <= ``grad_tol`` and it lies within ``max_move``
(relative) of the stall point; the gradient norms before and after refinement are reported. The index is then
exact: all eigenvalues of the dense float64 Hessian, an eigenvalue below -``zero_rtol`` * max|lambda| being
negative (the same rule as ``overparam.measure.hessian.hessian_index``, which the tests check it against).
Students use tanh by default (the loss is smooth, so Newton's method and the index are well defined; ReLU
students have kinks where the Hessian jumps); ``activation=relu`` is available.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, hessian, vmap

from overparam.config import ConfigError, StudyConfig, param
from overparam.models import mlp_parameter_count
from overparam.studies.base import (Check, FLOAT64, MAX_EXAMPLES, MAX_STEPS, RunContext, Study, StudyResult, fmt,
                                    register)
from overparam.train import Diverged
from overparam.train.parallel import torch_threads

DAUPHIN = ("Dauphin et al. 2014 (NIPS), Sec. 4 and Fig. 1(e,f) (arXiv 1406.2572; Fig. 2 of arXiv 1405.4604): "
           "index vs training error at critical points found by Newton's method")
TALK = ("the talk 'Over-Parametrization in Deep Learning' (Sagun et al.): the chance that all eigenvalues are "
        "non-negative falls exponentially with the parameter count; Safran & Shamir 2018 (ICML): spurious local "
        "minima of 2-layer ReLU teacher-student nets become rare with over-parameterization")
_ACT = {"tanh": torch.tanh, "relu": torch.relu, "softplus": torch.nn.functional.softplus}


@dataclass
class SaddleIndexConfig(StudyConfig):
    d: int = param(4, "input dimension", min=1, max=10_000)
    teacher_width: int = param(4, "hidden units of the random teacher", min=1, max=10_000)
    teacher_activation: str = param("tanh", "teacher activation (tanh: realizable by tanh students of width >= "
                                            "teacher_width, so wide students reach true critical points)",
                                    choices=("tanh", "relu", "softplus"))
    teacher_scale: float = param(2.0, "teacher's first-layer weights: teacher_scale x fan-in-scaled Gaussians",
                                 min=1e-3, max=100.0)
    n_train: int = param(100, "training inputs (standard Gaussian)", min=4, max=MAX_EXAMPLES)
    widths: list[int] = param([1, 2, 4, 8], "student hidden widths (under- to over-parameterized)", min=1, max=10_000)
    seeds: int = param(12, "students (initializations) per width", min=2, max=100_000)
    activation: str = param("tanh", "student activation", choices=tuple(_ACT))
    init_scale: float = param(0.3, "students' initial weights: init_scale x fan-in-scaled Gaussians "
                                    "(small inits make training pass by saddles)", min=1e-6, max=10.0)
    lr: float = param(0.5, "full-batch gradient-descent step", min=1e-6, max=10.0)
    steps: int = param(4000, "gradient-descent steps", min=10, max=MAX_STEPS)
    record_every: int = param(50, "steps between gradient-norm records (stall detection)", min=1, max=MAX_STEPS)
    stall_ratio: float = param(0.3, "a plateau is a local minimum in time of ||g|| below this fraction of the "
                                    "largest ||g|| seen so far", min=0.0, max=1.0)
    max_plateaus: int = param(1, "earlier plateaus kept per run (deepest first), besides the end point", min=0, max=100)
    newton_steps: int = param(100, "Levenberg-Marquardt iterations refining each stall point", min=0, max=100_000)
    grad_tol: float = param(1e-6, "a refined point is critical if ||grad|| <= grad_tol", min=0.0, max=1e6)
    max_move: float = param(0.2, "and if it moved <= max_move x ||theta|| from the stall point", min=0.0, max=1e6)
    zero_rtol: float = param(1e-4, "eigenvalues within zero_rtol x max|lambda| of zero count as zero",
                             min=0.0, max=0.1)
    stuck_loss: float = param(0.05, "a run is stuck if its final training loss exceeds this (targets have "
                                    "unit variance, so 1 = predicting the mean)", min=0.0, max=1e6)

    def validate(self) -> None:
        w = list(self.widths)
        if len(w) < 2 or sorted(w) != w or len(set(w)) != len(w):
            raise ConfigError("widths: need at least 2 strictly increasing widths, e.g. 1,2,4,8")

    def peak_bytes(self) -> dict[str, float]:
        """Dense float64 Hessians of every student of the widest width at its stall points, and the
        forward-over-reverse products that build them (one tangent per parameter)."""
        h = max(self.widths)
        P = h * (self.d + 2) + 1
        points = self.seeds * (self.max_plateaus + 1)
        return {"widths": FLOAT64 * points * (3 * P ** 2 + P * self.n_train * h),
                "n_train": FLOAT64 * self.n_train * (self.d + 1) * 2}


PRESETS = {
    "quick": {},   # the defaults: 4 widths x 12 seeds, 4000 GD steps, ~30-36 s on one thread
    "paper": {"widths": [1, 2, 3, 4, 6, 8, 12, 16], "seeds": 64, "n_train": 200, "steps": 20000,
              "newton_steps": 200, "max_plateaus": 3},
}


# ------------------------------------------------------------------------------------------- teacher, students
def teacher_data(d: int, m: int, n: int, seed: int, activation: str = "tanh",
                 scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n standard Gaussian inputs labelled by a random 2-layer teacher (m units); targets standardized."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = scale * torch.randn(m, d, generator=g, dtype=torch.float64) / d ** 0.5
    a = torch.randn(m, generator=g, dtype=torch.float64) / m ** 0.5
    y = _ACT[activation](X @ W.T) @ a
    return X, (y - y.mean()) / y.std()


def student_residual(X: torch.Tensor, y: torch.Tensor, h: int, activation: str = "tanh"):
    """Residuals f(x_i) - y_i of the student ``in -> h -> 1`` as a function of its flat parameter vector, laid
    out as ``MLP(d, [h], 1)``'s parameters: first-layer weight (h x d), bias (h), output weight (h), bias (1)."""
    d, act = X.shape[1], _ACT[activation]

    def residual(theta: torch.Tensor) -> torch.Tensor:
        W = theta[:h * d].reshape(h, d)
        b, v, c = theta[h * d:h * d + h], theta[h * d + h:h * d + 2 * h], theta[-1]
        return act(X @ W.T + b) @ v + c - y

    return residual


def student_loss(X: torch.Tensor, y: torch.Tensor, h: int, activation: str = "tanh"):
    """Mean squared error of the student as a function of its flat parameters (see :func:`student_residual`)."""
    residual = student_residual(X, y, h, activation)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return (residual(theta) ** 2).mean()

    return loss


def init_students(d: int, h: int, count: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(count, h * d, generator=g, dtype=torch.float64) / d ** 0.5
    v = torch.randn(count, h, generator=g, dtype=torch.float64) / h ** 0.5
    z = torch.zeros
    return scale * torch.cat([W, z(count, h, dtype=W.dtype), v, z(count, 1, dtype=W.dtype)], 1)


def train_students(loss, theta0: torch.Tensor, lr: float, steps: int, record_every: int):
    """Full-batch GD on all replicas at once; returns the final parameters, the recorded parameters and
    gradient norms (records x replicas), and the steps of the records."""
    G = vmap(grad(loss))
    theta, snaps, norms, at = theta0.clone(), [], [], []
    for step in range(steps + 1):
        g = G(theta)
        if step % record_every == 0 or step == steps:
            snaps.append(theta.clone())
            norms.append(g.norm(dim=1))
            at.append(step)
        if step < steps:
            theta = theta - lr * g
    return theta, torch.stack(snaps), torch.stack(norms), np.array(at)


def stall_points(norms: torch.Tensor, ratio: float, max_plateaus: int) -> list[list[int]]:
    """Per replica, record indices of its stall points: the deepest ``max_plateaus`` earlier local minima in
    time of the gradient norm below ``ratio`` x its running maximum, and the last record."""
    T, R = norms.shape
    out = []
    for r in range(R):
        g = norms[:, r].numpy()
        run_max = np.maximum.accumulate(g)
        inner = [t for t in range(1, T - 1) if g[t] < g[t - 1] and g[t] <= g[t + 1] and g[t] < ratio * run_max[t]]
        inner = sorted(sorted(inner, key=lambda t: g[t])[:max_plateaus])
        out.append(inner + [T - 1])
    return out


def newton_refine(loss, theta: torch.Tensor, iters: int, mu0: float = 1e-2):
    """Levenberg-Marquardt on g(theta) = 0 for a batch of points: step -(H^2 + mu I)^-1 H g, accepted if it
    lowers ||g|| (then mu /= 4) else rejected (mu *= 4). Converges to critical points of any index."""
    G, Hf = vmap(grad(loss)), vmap(hessian(loss))
    cur = theta.clone()
    mu = torch.full((len(cur),), mu0, dtype=cur.dtype)
    eye = torch.eye(cur.shape[1], dtype=cur.dtype)
    g = G(cur)
    gn = g.norm(dim=1)
    for _ in range(iters):
        H = Hf(cur)
        step = torch.linalg.solve(H @ H + mu[:, None, None] * eye, (H @ g[..., None]))[..., 0]
        new = cur - step
        g_new = G(new)
        gn_new = g_new.norm(dim=1)
        ok = gn_new < gn
        cur = torch.where(ok[:, None], new, cur)
        g = torch.where(ok[:, None], g_new, g)
        gn = torch.where(ok, gn_new, gn)
        mu = torch.where(ok, mu / 4, mu * 4).clamp(1e-12, 1e12)
        if bool((gn < 1e-13).all()):
            break
    return cur, gn


def gauss_newton_refine(residual, loss, theta: torch.Tensor, iters: int, mu0: float = 1e-3):
    """Levenberg-Marquardt on the residuals (minimizes the loss): step -(J^T J + mu I)^-1 J^T r, accepted if it
    lowers the loss. The fallback for stalls near degenerate minima (wide students near zero loss), where
    Newton on g creeps; it cannot reach a saddle, so what it finds is checked like any other point."""
    from torch.func import jacrev

    J_of, L = vmap(jacrev(residual)), vmap(loss)
    cur = theta.clone()
    mu = torch.full((len(cur),), mu0, dtype=cur.dtype)
    eye = torch.eye(cur.shape[1], dtype=cur.dtype)
    val = L(cur)
    for _ in range(iters):
        J, r = J_of(cur), vmap(residual)(cur)
        JT = J.transpose(1, 2)
        step = torch.linalg.solve(JT @ J + mu[:, None, None] * eye, (JT @ r[..., None]))[..., 0]
        new = cur - step
        val_new = L(new)
        ok = val_new < val
        cur = torch.where(ok[:, None], new, cur)
        val = torch.where(ok, val_new, val)
        mu = torch.where(ok, mu / 4, mu * 4).clamp(1e-14, 1e12)
    return cur, vmap(grad(loss))(cur).norm(dim=1)


def index_of(loss, theta: torch.Tensor, zero_rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact index (fraction of eigenvalues < -zero_rtol x max|lambda|) and lambda_min of the dense Hessians."""
    ev = torch.linalg.eigvalsh(vmap(hessian(loss))(theta))
    tol = zero_rtol * ev.abs().max(dim=1).values
    return (ev < -tol[:, None]).double().mean(1).numpy(), ev[:, 0].numpy()


# ------------------------------------------------------------------------------------------- run
def run(cfg: SaddleIndexConfig, ctx: RunContext) -> StudyResult:
    X, y = teacher_data(cfg.d, cfg.teacher_width, cfg.n_train, cfg.seed, cfg.teacher_activation,
                        cfg.teacher_scale)
    rows = {k: [] for k in ("width", "seed", "step", "loss", "index", "lambda_min", "grad_before", "grad_after",
                            "moved", "final")}
    final_loss = np.zeros((len(cfg.widths), cfg.seeds))
    with torch_threads(1), ctx.progress.bar(len(cfg.widths), "widths") as bar:
        for i, h in enumerate(cfg.widths):
            loss = student_loss(X, y, h, cfg.activation)
            residual = student_residual(X, y, h, cfg.activation)
            theta0 = init_students(cfg.d, h, cfg.seeds, cfg.init_scale, cfg.seed * 1_000_003 + h)
            theta, snaps, norms, at = train_students(loss, theta0, cfg.lr, cfg.steps, cfg.record_every)
            final_loss[i] = vmap(loss)(theta).numpy()
            if not np.isfinite(norms.numpy()).all():
                raise Diverged(f"width {h}: gradient descent diverged at lr={cfg.lr}; lower the learning rate")
            picks = stall_points(norms, cfg.stall_ratio, cfg.max_plateaus)
            who = [(r, t) for r in range(cfg.seeds) for t in picks[r]]
            start = torch.stack([snaps[t, r] for r, t in who])
            refined, gn = newton_refine(loss, start, cfg.newton_steps)
            retry = gn > cfg.grad_tol
            if retry.any():  # stalls Newton on g could not settle: try a descent refinement, keep the better
                alt, gn_alt = gauss_newton_refine(residual, loss, start[retry], cfg.newton_steps)
                better = gn_alt < gn[retry]
                rows_retry = torch.nonzero(retry)[:, 0][better]
                refined[rows_retry], gn[rows_retry] = alt[better], gn_alt[better]
            idx, lmin = index_of(loss, refined, cfg.zero_rtol)
            moved = ((refined - start).norm(dim=1) / start.norm(dim=1).clamp_min(1e-12)).numpy()
            rows["width"] += [h] * len(who)
            rows["seed"] += [r for r, _ in who]
            rows["step"] += [int(at[t]) for _, t in who]
            rows["loss"] += vmap(loss)(refined).tolist()
            rows["index"] += idx.tolist()
            rows["lambda_min"] += lmin.tolist()
            rows["grad_before"] += [float(norms[t, r]) for r, t in who]
            rows["grad_after"] += gn.tolist()
            rows["moved"] += moved.tolist()
            rows["final"] += [t == len(at) - 1 for _, t in who]
            bar.update(1)
    points = {k: np.asarray(v) for k, v in rows.items()}
    params = np.array([mlp_parameter_count(cfg.d, [h], 1) for h in cfg.widths])
    return summarize(cfg, params, points, final_loss)


def spearman(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Spearman correlation of x and y and its two-sided p-value; with ``groups``, stratified: ranks are taken
    within each group (centered, scaled to [-1/2, 1/2]) and pooled, so only within-group orderings count.
    Groups whose x or y is constant carry no information and drop out. NaN if nothing is left."""
    from scipy import stats

    groups = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups)
    rx, ry = [], []
    for g in np.unique(groups):
        sel = groups == g
        if sel.sum() < 2 or np.ptp(x[sel]) == 0 or np.ptp(y[sel]) == 0:
            continue
        for src, dst in ((x, rx), (y, ry)):
            r = stats.rankdata(src[sel])
            dst.append((r - r.mean()) / len(r))
    if not rx:
        return float("nan"), float("nan")
    rx, ry = np.concatenate(rx), np.concatenate(ry)
    if len(rx) < 3:
        return float("nan"), float("nan")
    res = stats.pearsonr(rx, ry)
    return float(res.statistic), float(res.pvalue)


def summarize(cfg, params: np.ndarray, points: dict, final_loss: np.ndarray) -> StudyResult:
    """Checks and figures from the measured critical points (``points``: arrays width, loss, index,
    grad_after, moved, ...) and the final training losses (widths x seeds)."""
    widths = np.asarray(cfg.widths)
    crit = (points["grad_after"] <= cfg.grad_tol) & (points["moved"] <= cfg.max_move)
    rho, p = spearman(points["loss"][crit], points["index"][crit], points["width"][crit])
    rho_pooled, p_pooled = spearman(points["loss"][crit], points["index"][crit])
    stuck = (final_loss > cfg.stuck_loss).mean(axis=1)
    n_crit = int(crit.sum())
    high = crit & (points["loss"] > cfg.stuck_loss)
    minima_high = [float((points["index"][high & (points["width"] == h)] == 0).mean())
                   if (high & (points["width"] == h)).any() else float("nan") for h in widths]
    checks = [
        Check("index rises with the training loss at critical points",
              "Spearman rho(loss, index) > 0 with p < 0.05 over the refined stall points, ranked within each "
              "width (one architecture's landscape at a time, as in Dauphin et al.)",
              f"rho = {fmt(rho)}, p = {fmt(p)} (pooled over widths: {fmt(rho_pooled)}) over {n_crit} critical "
              f"points (of {len(crit)} stall points; ||grad|| <= {fmt(cfg.grad_tol)})",
              bool(np.isfinite(rho) and rho > 0 and p < 0.05), DAUPHIN),
        Check("fewer runs stuck as width grows",
              f"fraction of runs ending with training loss > {fmt(cfg.stuck_loss)}: widest width below narrowest",
              f"{fmt(stuck[0])} at h={widths[0]} (P={params[0]}) -> {fmt(stuck[-1])} at h={widths[-1]} "
              f"(P={params[-1]}); all: " + ", ".join(fmt(s) for s in stuck),
              bool(stuck[-1] < stuck[0]), TALK),
    ]
    metrics = {"spearman_rho": rho, "spearman_p": p, "spearman_rho_pooled": rho_pooled,
               "n_stall_points": int(len(crit)), "n_critical": n_crit,
               "widths": widths.tolist(), "params": params.tolist(), "stuck_fraction": stuck.tolist(),
               "median_final_loss": np.median(final_loss, axis=1).tolist(),
               "minima_fraction_above_threshold": minima_high,
               "median_grad_before": float(np.median(points["grad_before"])) if len(crit) else float("nan"),
               "max_grad_after_critical": float(points["grad_after"][crit].max()) if n_crit else float("nan"),
               "mean_index_critical": float(points["index"][crit].mean()) if n_crit else float("nan")}
    arrays = {**{f"point_{k}": v for k, v in points.items()}, "point_critical": crit, "widths": widths,
              "params": params, "final_loss": final_loss, "stuck_fraction": stuck}
    notes = (f"{n_crit} of {len(crit)} stall points refined to critical points (||grad|| <= {fmt(cfg.grad_tol)}); "
             f"Spearman rho(loss, index) = {fmt(rho)} (p = {fmt(p)}). Fraction of runs stuck above loss "
             f"{fmt(cfg.stuck_loss)}: " + ", ".join(f"h={h}: {fmt(s)}" for h, s in zip(widths, stuck)) + ". "
             "Fraction of critical points above that loss that are minima (index 0): "
             + ", ".join(f"h={h}: {fmt(m)}" for h, m in zip(widths, minima_high)) + ".")
    return StudyResult(metrics, checks, arrays, {"saddle_index": _figure(cfg, params, points, crit, stuck)},
                       notes=notes)


def _figure(cfg, params, points, crit, stuck):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    widths = list(cfg.widths)
    cmap = plt.get_cmap("viridis")
    for j, h in enumerate(widths):
        sel = crit & (points["width"] == h)
        if sel.any():
            a.scatter(points["loss"][sel], points["index"][sel], s=18, alpha=0.7,
                      color=cmap(j / max(len(widths) - 1, 1)), label=f"h={h} (P={params[j]})")
    a.set_xscale("symlog", linthresh=1e-4)
    a.set_xlabel("training loss at the critical point")
    a.set_ylabel("index (fraction of negative eigenvalues)")
    a.set_title("critical points near stalls: index vs loss (Dauphin et al. 2014)", fontsize=10)
    a.axvline(cfg.stuck_loss, color="gray", ls=":", lw=1)
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=7)
    b.plot(params, stuck, "o-", color="C3")
    for h, P, s in zip(widths, params, stuck):
        b.annotate(f"h={h}", (P, s), textcoords="offset points", xytext=(3, 4), fontsize=7)
    b.set_xscale("log")
    b.set_ylim(-0.03, 1.03)
    b.set_xlabel("student parameters")
    b.set_ylabel(f"fraction of runs with final loss > {fmt(cfg.stuck_loss)}")
    b.axvline(mlp_parameter_count(cfg.d, [cfg.teacher_width], 1), color="k", ls=":", lw=1, label="teacher size")
    b.set_title("runs stuck vs width", fontsize=10)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="saddle-index",
    description="Index of the Hessian at stall points vs training loss, and runs stuck vs width (teacher-student).",
    paper="Dauphin et al. 2014 (NIPS); the talk 'Over-Parametrization in Deep Learning'",
    config=SaddleIndexConfig, presets=PRESETS, run=run))
