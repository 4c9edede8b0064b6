"""Weight decay switches subnetworks off: parallel ReLU nets are locally adaptive (Zhang & Wang, ICLR 2023).

Zhang & Wang ("Deep learning meets nonparametric regression: are weight-decayed DNNs locally adaptive?")
train a *parallel* network -- the sum of M ReLU MLPs of width w and depth L, all reading the input --
with the penalty lambda * sum ||W||_F^2 on the weights (not the biases). The penalty is equivalent to an
l_p constraint (p = 2/L) on the subnetworks' scales, so a larger lambda turns whole subnetworks off
(their output becomes constant), and the net behaves like a locally adaptive estimator: on Doppler
and a function of varying smoothness it tracks trend filtering and wavelet denoising in MSE vs
degrees of freedom, while a vanilla MLP behaves like a linear smoother (smoothing spline).

Here, on a fixed, evenly spaced design with R noise draws ("repeats"):

- parallel net and vanilla MLP (a ParallelNet with M=1, width matched to the parallel net's parameter
  count), trained full-batch with Adam (cosine-decayed lr) on ``mean (f(x)-y)^2 + lambda sum ||W||^2``
  for a grid of lambda; repeat r (noise draw r) has its own initialization, shared by every lambda, and
  all train at once as one stacked tensor (``replicas=`` axis);
- active subnetworks (output variation above a relative tolerance, see
  :func:`overparam.models.parallel.active_mask`) vs lambda;
- baselines: cubic smoothing spline, RBF kernel ridge regression, wavelet soft thresholding, trend
  filtering of orders ``tf_orders``, each over its tuning grid (:mod:`overparam.measure.baselines1d`);
- MSE against the clean function at the design points vs degrees of freedom: exact df for the
  baselines (trace of the smoother; knots + k + 1; nonzero wavelet coefficients), and for the nets
  the Monte-Carlo estimate df = sum_i Cov(yhat_i, y_i) / sigma^2 over the R repeats (Efron 2004);
- a small residual MLP (:class:`overparam.models.parallel.ResNet1D`): fraction of residual branches that
  stay active vs lambda.

The networks see the input rescaled to [-s, s] (x' = s (2x - 1), s = ``input_scale``), with their
first-layer ReLU breakpoints initialized uniformly over that range (``init=domain``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import doppler, piecewise
from overparam.measure.baselines1d import (krr_smoothers, monte_carlo_dof, smoother_df, smoothing_spline_smoother,
                                           trend_filter, trend_filter_lambda_max, wavelet_denoise)
from overparam.models.parallel import ParallelNet, ResNet1D, active_blocks, active_subnetworks, weight_penalty
from overparam.studies.base import (Check, FLOAT32, FLOAT64, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study,
                                    StudyResult, fmt, register)
from overparam.train import Diverged

ZW = "Zhang & Wang, ICLR 2023 (Deep learning meets nonparametric regression)"
TARGETS = {"doppler": doppler, "piecewise": piecewise}
METHODS = ("parallel", "mlp", "spline", "krr", "wavelet", "trend_filter")


@dataclass
class WeightDecaySparsityConfig(StudyConfig):
    targets: list[str] = param(["doppler", "piecewise"], "target functions on [0, 1]", choices=tuple(TARGETS))
    n_train: int = param(256, "design points (evenly spaced; a multiple of 2**level for the wavelets)", min=16,
                         max=MAX_EXAMPLES)
    noise_std: float = param(0.1, "standard deviation of the Gaussian noise", min=1e-4, max=10.0)
    repeats: int = param(10, "noise draws per setting (>= 2 for the Monte-Carlo df)", min=2, max=64)
    lambdas: list[float] = param([1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
                                 "weight-decay grid lambda for the parallel net and the MLP", min=0.0, max=1e6)
    M: int = param(16, "subnetworks of the parallel net", min=1, max=4096)
    L: int = param(4, "linear layers per subnetwork (depth)", min=2, max=12)
    w: int = param(8, "width of each subnetwork", min=1, max=4096)
    mlp_width: int = param(0, "hidden width of the vanilla MLP (0: match the parallel net's parameter count)",
                           min=0, max=MAX_WIDTH)
    input_scale: float = param(30.0, "the nets see input_scale * (2x - 1): a larger scale lets Adam reach the "
                               "steep features Doppler needs in few steps (equivalent to a first-layer lr multiplier)",
                               min=1e-3, max=1e4)
    init: str = param("domain", "first-layer init: 'domain' spreads the ReLU breakpoints uniformly over the "
                                "input range [-1, 1]; 'default' is nn.Linear's", choices=("domain", "default"))
    steps: int = param(4000, "full-batch Adam steps", min=1, max=MAX_STEPS)
    lr: float = param(0.01, "Adam learning rate (cosine decay to 0)", min=1e-6, max=1.0)
    resnet_width: int = param(16, "ResNet stream width", min=1, max=4096)
    resnet_blocks: int = param(8, "ResNet residual blocks", min=1, max=1000)
    resnet_lambdas: list[float] = param([1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0], "weight-decay grid for the ResNet",
                                        min=0.0, max=1e6)
    resnet_repeats: int = param(3, "noise draws per ResNet lambda", min=1, max=64)
    resnet_steps: int = param(3000, "full-batch Adam steps of the ResNet", min=1, max=MAX_STEPS)
    tf_orders: list[int] = param([1, 2], "trend-filtering orders k", min=0, max=3)
    tuning_points: int = param(12, "points in each baseline's tuning grid", min=3, max=100)
    rtol: float = param(1e-3, "relative tolerance of 'active' (output RMS variation vs the scale)", min=0.0, max=0.5)

    def validate(self) -> None:
        if sorted(self.lambdas) != list(self.lambdas) or len(set(self.lambdas)) < 3:
            raise ConfigError("lambdas: need >= 3 distinct increasing values, e.g. 1e-5,1e-4,1e-3")
        if sorted(self.resnet_lambdas) != list(self.resnet_lambdas) or len(set(self.resnet_lambdas)) < 2:
            raise ConfigError("resnet_lambdas: need >= 2 distinct increasing values")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError("targets: list each target once")

    def peak_bytes(self) -> dict[str, float]:
        """The baselines' n x n smoother matrices, and every (target, lambda, draw) net trained at once on
        all n points: the parallel net, its parameter-matched MLP and the ResNet."""
        n, T = self.n_train, len(self.targets)
        replicas = T * len(self.lambdas) * self.repeats
        mlp_width = self.mlp_width or math.isqrt(self.M) * self.w + self.w
        units = max(self.M * self.w, mlp_width)
        nets = FLOAT32 * 4 * replicas * (n * units * self.L + self.M * self.L * self.w ** 2 + self.L * mlp_width ** 2)
        resnet = FLOAT32 * 4 * T * len(self.resnet_lambdas) * self.resnet_repeats * (
            n * self.resnet_width * (self.resnet_blocks + 1) + self.resnet_blocks * self.resnet_width ** 2)
        return {"n_train": FLOAT64 * (self.tuning_points + 4) * n ** 2, "lambdas": nets, "resnet_lambdas": resnet}


PRESETS = {
    # One target, 3 repeats, a 5-point lambda grid, short training; baselines are cheap.
    "quick": {"targets": ["doppler"], "n_train": 256, "repeats": 3, "lambdas": [1e-5, 1e-3, 1e-2, 3e-2, 1e-1],
              "M": 16, "L": 4, "w": 8, "steps": 1500, "lr": 0.01, "input_scale": 30.0,
              "resnet_width": 8, "resnet_blocks": 6, "resnet_lambdas": [1e-2, 1e-1, 0.3, 1.0, 3.0],
              "resnet_repeats": 2, "resnet_steps": 1000, "tf_orders": [1], "tuning_points": 10},
    # Zhang & Wang's setup as far as our notes state it (Doppler and a piecewise target, 10 repeats; their
    # M, w, L and optimizer settings are not in our notes): a wider lambda grid, 10x the training.
    "paper": {"targets": ["doppler", "piecewise"], "n_train": 256, "repeats": 10,
              "lambdas": [1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
              "M": 32, "L": 4, "w": 8, "steps": 15000, "lr": 0.01, "input_scale": 30.0,
              "resnet_width": 16, "resnet_blocks": 10, "resnet_lambdas": [1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0],
              "resnet_repeats": 5, "resnet_steps": 10000, "tf_orders": [0, 1, 2], "tuning_points": 20},
}


# ----------------------------------------------------------------------------------------------- training

def train_penalized(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor, lams: torch.Tensor, steps: int,
                    lr: float, progress=None) -> torch.Tensor:
    """Full-batch Adam on ``mean_i (f_r(x_i) - Y_ri)^2 + lams_r * sum ||W_r||_F^2`` for every replica r.

    ``model`` has a replica axis (``replicas=R``); Y (R, N); lams (R,). The penalty covers parameters
    named ``weight*`` only (:func:`weight_penalty`), never biases. Replicas do not interact (Adam is
    elementwise and the loss is a sum over replicas). Returns the final per-replica training MSE.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    mse = None
    for step in range(steps):
        mse = ((model(X).squeeze(-1) - Y) ** 2).mean(-1)
        loss = (mse + lams * weight_penalty(model)).sum()
        if not torch.isfinite(loss):
            raise Diverged(f"penalized loss became {loss.item()} at step {step} (lr={lr}); lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress.update(1)
    with torch.no_grad():
        return ((model(X).squeeze(-1) - Y) ** 2).mean(-1)


def _share_init(model: torch.nn.Module, period: int = 1) -> None:
    """Replica i starts from replica (i mod period)'s initial parameters: with replicas ordered
    (target, lambda, repeat) and period = repeats, repeat r has its own initialization, shared by
    every lambda and target (each lambda path starts from the same point)."""
    with torch.no_grad():
        for p in model.parameters():
            reps = p.shape[0] // period
            p.copy_(p[:period].repeat(reps, *([1] * (p.dim() - 1))))


def matched_mlp_width(M: int, L: int, w: int) -> int:
    """Width W of a 1-W-...-W-1 MLP with L linear layers whose parameter count is closest to M subnetworks'."""
    target = ParallelNet(1, M, L, w).parameters_per_subnetwork() * M
    count = lambda W: ParallelNet(1, 1, L, W).parameters_per_subnetwork()  # noqa: E731
    return min(range(1, 4 * int(math.sqrt(target)) + 8), key=lambda W: abs(count(W) - target))


# ----------------------------------------------------------------------------------------------- summaries

def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan if either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def mse_at_df(df, mse, group, at: float) -> float:
    """Lowest MSE among the method's curves (one per group) linearly interpolated in log df at ``at``;
    nan if no curve spans ``at``."""
    best = np.nan
    df, mse, group = np.asarray(df, float), np.asarray(mse, float), np.asarray(group)
    for g in np.unique(group):
        d, m = df[group == g], mse[group == g]
        o = np.argsort(d)
        d, m = d[o], m[o]
        if len(d) and d[0] > 0 and d[0] <= at <= d[-1]:
            v = float(np.interp(np.log(at), np.log(d), m))
            best = v if not np.isfinite(best) else min(best, v)
    return best


def decreasing_trend(lams, counts, min_rho: float = -0.7) -> tuple[bool, float]:
    """Counts fall with lambda: fewer at the largest lambda than at the smallest, and either the
    sequence never rises or its Spearman rho(lambda, counts) <= min_rho (a trend with small wiggles)."""
    rho = spearman(lams, counts)
    counts = np.asarray(counts, float)
    monotone = bool(np.all(np.diff(counts) <= 1e-12))
    return bool(counts[-1] < counts[0] and (monotone or (np.isfinite(rho) and rho <= min_rho))), rho


def summarize(cfg: WeightDecaySparsityConfig, curves: dict, active: dict, resnet: dict, examples: dict,
              n_mlp_params: int, n_par_params: int, extra_metrics: dict | None = None) -> StudyResult:
    """curves[target][method] = {"df": [...], "mse": [...], "label": [...]}; active[target] = (R, lambdas)
    counts; resnet = {"lambdas", "fraction" (repeats, lambdas)}."""
    checks, metrics = [], {"parallel_params": n_par_params, "mlp_params": n_mlp_params,
                           "mlp_width": cfg.mlp_width or matched_mlp_width(cfg.M, cfg.L, cfg.w),
                           **(extra_metrics or {})}
    best = {}
    for target, by_method in curves.items():
        best[target] = {m: float(np.nanmin(c["mse"])) for m, c in by_method.items()}
        for m, c in by_method.items():
            i = int(np.nanargmin(c["mse"]))
            metrics[f"{target}_best_mse_{m}"] = best[target][m]
            metrics[f"{target}_df_at_best_{m}"] = float(c["df"][i])
        # every baseline's MSE at the df where the parallel net is best (interpolated on log df)
        df_par = metrics[f"{target}_df_at_best_parallel"]
        metrics[f"{target}_mse_at_parallel_df"] = {m: mse_at_df(c["df"], c["mse"], c["group"], df_par)
                                                   for m, c in by_method.items() if m != "parallel"}
        mean_active = np.asarray(active[target]).mean(0)
        metrics[f"{target}_active_subnetworks"] = mean_active.tolist()
        ok, rho = decreasing_trend(cfg.lambdas, mean_active)
        metrics[f"{target}_active_spearman"] = rho
        checks.append(Check(
            f"active subnetworks fall as weight decay grows ({target})",
            "fewer active at the largest lambda than the smallest, and the mean count never rises along the "
            "lambda grid or Spearman rho(lambda, count) <= -0.7",
            f"rho={fmt(rho)}; active {fmt(mean_active[0])} -> {fmt(mean_active[-1])} of {cfg.M} "
            f"(lambda {cfg.lambdas[0]:g} -> {cfg.lambdas[-1]:g})", ok, ZW + ", Sec. 5 (sparsity of subnetworks)"))
    if "doppler" in best:
        b = best["doppler"]
        checks.append(Check(
            "locally adaptive baselines beat the linear smoothers on Doppler",
            "min(best MSE of trend filtering, wavelets) < min(best MSE of spline, kernel ridge)",
            f"TF {fmt(b['trend_filter'], 3)}, wavelet {fmt(b['wavelet'], 3)} vs spline {fmt(b['spline'], 3)}, "
            f"KRR {fmt(b['krr'], 3)}",
            min(b["trend_filter"], b["wavelet"]) < min(b["spline"], b["krr"]),
            "Donoho & Johnstone 1994; Tibshirani 2014; " + ZW + " (baselines)"))
    for target, b in best.items():
        label = target.capitalize()
        checks.append(Check(
            f"parallel net beats the smoothing spline on {label}",
            "best MSE (over lambda) of the parallel net < best MSE (over its penalty) of the smoothing spline",
            f"parallel {fmt(b['parallel'], 3)} vs spline {fmt(b['spline'], 3)}",
            b["parallel"] < b["spline"], ZW + f", Sec. 5 (MSE vs degrees of freedom, {target})"))
        checks.append(Check(
            f"parallel net beats the vanilla MLP on {label}",
            "best MSE of the parallel net < best MSE of a vanilla MLP of matched size",
            f"parallel {fmt(b['parallel'], 3)} vs MLP {fmt(b['mlp'], 3)}",
            b["parallel"] < b["mlp"], ZW + ", Sec. 5 (vanilla NN behaves like a linear smoother)"))
    frac = np.asarray(resnet["fraction"]).mean(0)
    ok, rho = decreasing_trend(resnet["lambdas"], frac)
    metrics["resnet_active_fraction"] = frac.tolist()
    metrics["resnet_spearman"] = rho
    checks.append(Check(
        "ResNet: fraction of active residual blocks falls with weight decay",
        "lower at the largest lambda than the smallest, and never rising along the grid or Spearman rho <= -0.7",
        f"rho={fmt(rho)}; active fraction {fmt(frac[0])} -> {fmt(frac[-1])}", ok, ZW + " (ResNet experiment)"))
    arrays = {}
    for target, by_method in curves.items():
        for m, c in by_method.items():
            arrays[f"{target}_{m}_df"] = np.asarray(c["df"], float)
            arrays[f"{target}_{m}_mse"] = np.asarray(c["mse"], float)
        arrays[f"{target}_active"] = np.asarray(active[target])
    arrays["lambdas"] = np.asarray(cfg.lambdas, float)
    arrays["resnet_lambdas"] = np.asarray(resnet["lambdas"], float)
    arrays["resnet_fraction"] = np.asarray(resnet["fraction"], float)
    metrics["best_mse"] = best
    notes = _notes(cfg, best, active, frac, resnet, metrics)
    figures = {"mse_vs_df": _figure_curves(cfg, curves), "sparsity": _figure_sparsity(cfg, active, resnet)}
    if examples:
        figures["fits"] = _figure_fits(examples)
    return StudyResult(metrics, checks, arrays, figures, notes=notes)


def _notes(cfg, best, active, frac, resnet, metrics) -> str:
    parts = []
    for target, b in best.items():
        a = np.asarray(active[target]).mean(0)
        order = sorted(b, key=b.get)
        at = metrics[f"{target}_mse_at_parallel_df"]
        parts.append(f"{target}: best MSE " + ", ".join(f"{m} {b[m]:.4f}" for m in order)
                     + f"; at the parallel net's best df ({metrics[f'{target}_df_at_best_parallel']:.0f}) the "
                     + ", ".join(f"{m} {v:.4f}" for m, v in at.items() if np.isfinite(v))
                     + f"; active subnetworks {a[0]:.1f} -> {a[-1]:.1f} of {cfg.M} over lambda "
                     f"{cfg.lambdas[0]:g}..{cfg.lambdas[-1]:g}.")
    parts.append(f"ResNet active-block fraction {frac[0]:.2f} -> {frac[-1]:.2f} over lambda "
                 f"{resnet['lambdas'][0]:g}..{resnet['lambdas'][-1]:g}.")
    return " ".join(parts)


def _figure_curves(cfg, curves):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6.2 * len(curves), 4.4), squeeze=False)
    style = {"parallel": ("C3", "o-"), "mlp": ("C1", "s-"), "spline": ("C0", "-"), "krr": ("C9", "-"),
             "wavelet": ("C2", "-"), "trend_filter": ("C4", "-")}
    for ax, (target, by_method) in zip(axes[0], curves.items()):
        for m, c in by_method.items():
            for key in sorted(set(c["group"])):
                idx = [i for i, g in enumerate(c["group"]) if g == key]
                df, mse = np.asarray(c["df"])[idx], np.asarray(c["mse"])[idx]
                o = np.argsort(df)
                color, ls = style[m]
                ax.plot(df[o], mse[o], ls, color=color, ms=4, lw=1.3, alpha=0.9 if m in ("parallel", "mlp") else 0.7,
                        label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("degrees of freedom (exact for baselines; Monte-Carlo for nets)")
        ax.set_ylabel("MSE vs the clean function")
        ax.set_title(f"{target}, n={cfg.n_train}, sigma={cfg.noise_std:g}, {cfg.repeats} repeats", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _figure_sparsity(cfg, active, resnet):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for target, counts in active.items():
        counts = np.asarray(counts)
        a1.errorbar(cfg.lambdas, counts.mean(0), yerr=counts.std(0), marker="o", capsize=3, label=target)
    a1.set_xscale("log")
    a1.set_xlabel("weight decay lambda")
    a1.set_ylabel(f"active subnetworks (of {cfg.M})")
    a1.set_title(f"Parallel net M={cfg.M}, L={cfg.L}, w={cfg.w}", fontsize=10)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    frac = np.asarray(resnet["fraction"])
    a2.errorbar(resnet["lambdas"], frac.mean(0), yerr=frac.std(0), marker="s", capsize=3, color="C2")
    a2.set_xscale("log")
    a2.set_ylim(-0.05, 1.05)
    a2.set_xlabel("weight decay lambda")
    a2.set_ylabel("fraction of active residual blocks")
    a2.set_title(f"ResNet width {cfg.resnet_width}, {cfg.resnet_blocks} blocks", fontsize=10)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _figure_fits(examples):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(examples), figsize=(6.2 * len(examples), 4), squeeze=False)
    for ax, (target, ex) in zip(axes[0], examples.items()):
        ax.plot(ex["x"], ex["y"], ".", color="0.6", ms=3, label="data")
        ax.plot(ex["x"], ex["f"], "k-", lw=1, label="truth")
        for m, fit in ex["fits"].items():
            ax.plot(ex["x"], fit, lw=1.2, label=m)
        ax.set_title(f"{target}: best-tuned fits, repeat 0", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- run

def _baselines(cfg, x, f, Y, noise) -> tuple[dict, dict]:
    """MSE vs df of the four baselines on one target; Y, noise (R, n) numpy. Returns (curves, best fits)."""
    R, n = Y.shape
    sigma = cfg.noise_std
    curves = {m: {"df": [], "mse": [], "group": []} for m in ("spline", "krr", "wavelet", "trend_filter")}
    fits = {}

    def add(method, group, df, fit_rows):
        mse = float(((fit_rows - f) ** 2).mean())
        c = curves[method]
        c["df"].append(float(df))
        c["mse"].append(mse)
        c["group"].append(group)
        if mse <= min(c["mse"]):
            fits[method] = fit_rows[0]

    for lam in np.logspace(-10, -2, cfg.tuning_points):
        S = smoothing_spline_smoother(x, lam)
        add("spline", "smoothing spline", smoother_df(S), Y @ S.T)
    for gamma in (1e2, 1e3, 1e4):
        for S in krr_smoothers(x, np.logspace(-5, 1, cfg.tuning_points), gamma):
            add("krr", f"KRR gamma={gamma:g}", smoother_df(S), Y @ S.T)
    level = _wavelet_level(n)
    for c in np.logspace(-1.3, 0.2, cfg.tuning_points):
        out = [wavelet_denoise(y, c * sigma * math.sqrt(2 * math.log(n)), level=level) for y in Y]
        add("wavelet", "wavelet (sym8, soft)", np.mean([d for _, d in out]), np.stack([o for o, _ in out]))
    for k in cfg.tf_orders:
        lam_max = trend_filter_lambda_max(Y[0], k)
        for rel in np.logspace(-4, -0.3, cfg.tuning_points):
            out = [trend_filter(y, rel * lam_max, k) for y in Y]
            add("trend_filter", f"trend filtering k={k}", np.mean([o.df for o in out]), np.stack([o.fit for o in out]))
    return curves, fits


def _wavelet_level(n: int) -> int:
    import pywt

    level = pywt.dwt_max_level(n, pywt.Wavelet("sym8").dec_len)
    while level > 1 and n % (2 ** level):
        level -= 1
    return max(level, 1)


def domain_init_(model: torch.nn.Module, generator: torch.Generator, scale: float = 1.0) -> None:
    """Place every first-layer ReLU breakpoint -b/w uniformly in the input range [-scale, scale],
    keeping nn.Linear's first-layer weights: b = -w * c, c ~ U(-scale, scale). Data-independent."""
    first = model.layers[0] if isinstance(model, ParallelNet) else model.embed
    with torch.no_grad():
        c = (torch.rand(first.bias.shape, generator=generator) * 2 - 1) * scale
        first.bias.copy_(-first.weight.squeeze(-1) * c)


def _train_nets(cfg, X, Ys, build, lams, steps, progress, desc):
    """Train one stacked model on every (target, lambda, repeat): Ys (T, R, n) -> model with T*len(lams)*R
    replicas, ordered target-major, then lambda, then repeat. Repeat r's replicas share one initialization."""
    T, R, n = Ys.shape
    model = build(T * len(lams) * R)
    if cfg.init == "domain":
        domain_init_(model, torch.Generator().manual_seed(cfg.seed * 7919 + 17), cfg.input_scale)
    _share_init(model, R)
    lam_t = torch.tensor(np.tile(np.repeat(lams, R), T), dtype=torch.float32)
    Yt = torch.as_tensor(np.repeat(Ys, len(lams), axis=0).reshape(-1, n), dtype=torch.float32)
    with progress.bar(steps, desc) as bar:
        train_penalized(model, X, Yt, lam_t, steps, cfg.lr, bar)
    return model


def run(cfg: WeightDecaySparsityConfig, ctx: RunContext) -> StudyResult:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        return _run(cfg, ctx)


def _run(cfg: WeightDecaySparsityConfig, ctx: RunContext) -> StudyResult:
    n, R, sigma = cfg.n_train, cfg.repeats, cfg.noise_std
    x = np.linspace(0.0, 1.0, n)
    X = torch.as_tensor(cfg.input_scale * (2 * x - 1), dtype=torch.float32).reshape(-1, 1)
    rng = np.random.default_rng(cfg.seed)
    mlp_width = cfg.mlp_width or matched_mlp_width(cfg.M, cfg.L, cfg.w)
    par_params = ParallelNet(1, cfg.M, cfg.L, cfg.w).parameters_per_subnetwork() * cfg.M
    mlp_params = ParallelNet(1, 1, cfg.L, mlp_width).parameters_per_subnetwork()
    lams = np.asarray(cfg.lambdas, float)
    T, nl = len(cfg.targets), len(lams)
    F = np.stack([np.asarray(TARGETS[t](x), float) for t in cfg.targets])       # (T, n)
    noise = sigma * rng.standard_normal((T, R, n))
    Ys = F[:, None] + noise
    curves, active, examples, extra = {}, {}, {}, {}
    fits = {}
    for i, target in enumerate(cfg.targets):
        curves[target], fits[target] = _baselines(cfg, x, F[i], Ys[i], noise[i])
    for name, M, w in (("parallel", cfg.M, cfg.w), ("mlp", 1, mlp_width)):
        build = lambda B, M=M, w=w: ParallelNet(1, M, cfg.L, w, replicas=B, seed=cfg.seed * 7919 + M)  # noqa: E731
        model = _train_nets(cfg, X, Ys, build, lams, cfg.steps, ctx.progress, f"{name} x{T * nl * R}")
        with torch.no_grad():
            out = model(X).squeeze(-1).double().numpy().reshape(T, nl, R, n)
        if name == "parallel":
            def count(rtol):
                return torch.cat([active_subnetworks(model, X, rtol, reference=float(Ys[i].std()))
                                  .reshape(T, nl * R)[i] for i in range(T)]).numpy().reshape(T, nl, R)
            counts = count(cfg.rtol)
            for factor in (0.1, 10.0):  # how much the count depends on the tolerance
                other = count(cfg.rtol * factor).mean(-1)
                for i, target in enumerate(cfg.targets):
                    extra[f"{target}_active_subnetworks_rtol_{cfg.rtol * factor:g}"] = other[i].tolist()
        for i, target in enumerate(cfg.targets):
            c = {"df": [], "mse": [], "group": []}
            for j in range(nl):
                c["df"].append(monte_carlo_dof(out[i, j], noise[i], sigma))
                c["mse"].append(float(((out[i, j] - F[i]) ** 2).mean()))
                c["group"].append("parallel net (MC df)" if name == "parallel" else f"vanilla MLP w={mlp_width}")
            curves[target][name] = c
            fits[target][name] = out[i, int(np.argmin(c["mse"])), 0]
            if name == "parallel":
                active[target] = counts[i].T                                   # (R, lambdas)
    for i, target in enumerate(cfg.targets):
        examples[target] = {"x": x, "y": Ys[i, 0], "f": F[i], "fits": fits[target]}
    resnet = _resnet(cfg, X, x, rng, ctx)
    return summarize(cfg, curves, active, resnet, examples, mlp_params, par_params, extra)


def _resnet(cfg, X, x, rng, ctx) -> dict:
    f = np.asarray(TARGETS[cfg.targets[0]](x), float)
    Y = f + cfg.noise_std * rng.standard_normal((cfg.resnet_repeats, len(x)))
    lams = np.asarray(cfg.resnet_lambdas, float)
    model = _train_nets(cfg, X, Y[None], lambda B: ResNet1D(1, cfg.resnet_width, cfg.resnet_blocks, replicas=B,
                                                      seed=cfg.seed * 7919 + 101),
                        lams, cfg.resnet_steps, ctx.progress, f"resnet x{len(lams) * cfg.resnet_repeats}")
    counts = active_blocks(model, X, cfg.rtol, reference=float(Y.std())).numpy()
    frac = counts.reshape(len(lams), cfg.resnet_repeats).T / cfg.resnet_blocks
    return {"lambdas": lams.tolist(), "fraction": frac}


STUDY = register(Study(
    name="weight-decay-sparsity",
    description="Weight decay turns subnetworks of a parallel ReLU net off; MSE vs df against spline, KRR, "
                "wavelets and trend filtering on Doppler.",
    paper=ZW,
    config=WeightDecaySparsityConfig, presets=PRESETS, run=run))
