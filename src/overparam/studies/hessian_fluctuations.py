"""Eigenvalue fluctuations: the top Hessian eigenvalue of the same small net, trained from many seeds.

Sagun, Bottou & LeCun 2016 (arXiv 1611.07476) and the talk: a 2-hidden-layer ReLU net ([10, 5]) on two 2-D
Gaussian blobs, full-batch gradient descent at a constant step, repeated over thousands of initializations
(50K in the talk): the largest eigenvalue at the end of training varies from run to run, and wider blobs give
larger top eigenvalues. We histogram it and fit two extreme-value laws -- Gumbel (the law of the maximum of
many light-tailed variables) and Tracy-Widom beta=1 (the largest eigenvalue of a GOE random matrix) -- each
with free location and scale, and compare their Kolmogorov-Smirnov statistics.

Tracy-Widom beta=1 has no closed form; we use Chiani's (2014) shifted-gamma approximation
TW1 ~ Gamma(shape 46.446, scale 0.186054) - 9.84801, whose affine family (free location and scale) is exactly a
gamma law with that fixed shape. All the seeds train at once (torch.func.vmap over stacked parameters); each
top eigenvalue is then measured with ``hessian_eigs`` on that seed's network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from overparam.config import ConfigError, StudyConfig, param
from overparam.measure.hessian import hessian_eigs
from overparam.models import MLP
from overparam.studies.base import (Check, FLOAT64, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study, StudyResult,
                                    fmt, mlp_training_bytes, register)
from overparam.train.parallel import torch_threads

SAGUN16 = "Sagun, Bottou & LeCun 2016 (arXiv 1611.07476), Sec. 3 (top eigenvalue over many initializations)"
CHIANI = "Chiani 2014, J. Multivariate Anal. 129 (gamma approximation of Tracy-Widom)"
TW1_SHAPE, TW1_SCALE, TW1_SHIFT = 46.446, 0.186054, -9.84801


@dataclass
class FluctuationsConfig(StudyConfig):
    n_seeds: int = param(200, "initializations (networks) per data setting", min=10, max=100_000)
    n_train: int = param(100, "training examples (two blobs, balanced)", min=4, max=MAX_EXAMPLES)
    cluster_std: float = param(0.5, "blob standard deviation", min=0.01, max=1e3)
    wide_std: float = param(1.0, "blob standard deviation of the 'wider blobs' comparison", min=0.01, max=1e3)
    hidden: list[int] = param([10, 5], "hidden widths (Sagun et al. 2016: [10, 5])", min=1, max=MAX_WIDTH)
    loss: str = param("cross_entropy", "training loss", choices=("cross_entropy", "mse"))
    lr: float = param(0.1, "constant gradient-descent step", min=1e-6, max=10.0)
    steps: int = param(1000, "full-batch gradient-descent steps", min=1, max=MAX_STEPS)

    def validate(self) -> None:
        if self.wide_std <= self.cluster_std:
            raise ConfigError(f"wide_std: must exceed cluster_std={self.cluster_std} (it is the wider blobs)")

    def peak_bytes(self) -> dict[str, float]:
        return {"n_seeds": mlp_training_bytes(self.n_seeds, 2, self.hidden, 2, self.n_train, FLOAT64)}


PRESETS = {
    "quick": {},                                   # 2 x 200 nets of 97 parameters, 1000 GD steps, ~20 s
    "paper": {"n_seeds": 5000, "steps": 20000},    # Sagun et al. 2016: thousands of initializations
}


def two_blobs(n: int, std: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sagun et al. 2016's data: two Gaussian blobs centered at (1, 1) and (-1, -1)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centers = np.array([[1.0, 1.0], [-1.0, -1.0]])
    X = centers[y] + std * rng.standard_normal((n, 2))
    return torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.long)


def train_ensemble(cfg, X, y, seed: int):
    """This study's ensemble: cfg.n_seeds nets 2-hidden-2 on the blobs (see :func:`gd_ensemble`)."""
    return gd_ensemble(cfg.n_seeds, 2, cfg.hidden, 2, X, y, cfg.loss, cfg.lr, cfg.steps, seed)


def gd_ensemble(n_models: int, in_dim: int, hidden, out_dim: int, X, y, loss: str, lr: float, steps: int,
                seed: int, activation: str = "relu"):
    """Full-batch GD on ``n_models`` independently initialized MLPs at once (net i seeded with
    ``seed * 1_000_003 + i``). Returns (a template net, stacked float64 params, final gradient norms, final losses).

    All nets go through a few batched matmuls per step; they are independent, so the gradient of the summed
    losses is each net's own gradient. (``torch.func.vmap`` over ``grad`` does the same 2x slower here.)"""
    from torch.func import stack_module_state

    from overparam.models.mlp import ACTIVATIONS

    models = []
    for i in range(n_models):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + i)
            models.append(MLP(in_dim, hidden, out_dim, activation=activation).to(torch.float64))
    params, _ = stack_module_state(models)
    base = models[0]
    linear = [f"net.{i}" for i, m in enumerate(base.net) if isinstance(m, nn.Linear)]
    act = ACTIVATIONS[activation]()
    regression = torch.is_floating_point(y)

    def losses_of(p):
        h = X.expand(n_models, *X.shape)
        for j, name in enumerate(linear):
            h = torch.baddbmm(p[f"{name}.bias"][:, None, :], h, p[f"{name}.weight"].transpose(1, 2))
            if j < len(linear) - 1:
                h = act(h)
        M, N, C = h.shape
        if loss == "cross_entropy":
            per = nn.functional.cross_entropy(h.reshape(M * N, C), y.repeat(M), reduction="none")
            return per.reshape(M, N).mean(1)
        target = y.reshape(N, C).to(h.dtype) if regression else nn.functional.one_hot(y, C).to(h.dtype)
        return ((h - target) ** 2).mean(dim=(1, 2))

    names = list(params)
    leaves = [params[k].detach().clone().requires_grad_(True) for k in names]
    for step in range(steps + 1):
        losses = losses_of(dict(zip(names, leaves)))
        grads = torch.autograd.grad(losses.sum(), leaves)
        if step == steps:
            break
        with torch.no_grad():
            for leaf, g_ in zip(leaves, grads):
                leaf -= lr * g_
    gnorm = torch.sqrt(sum((t.reshape(n_models, -1) ** 2).sum(1) for t in grads)).numpy()
    params = {k: v.detach() for k, v in zip(names, leaves)}
    return base, params, gnorm, losses.detach().numpy()


def top_eigenvalues(cfg, base, params, X, y) -> np.ndarray:
    tops = []
    for i in range(cfg.n_seeds):
        net = MLP(2, cfg.hidden, 2).to(torch.float64)
        net.load_state_dict({k: v[i].detach() for k, v in params.items()})
        tops.append(hessian_eigs(net, cfg.loss, (X, y), k=1, method="lanczos", tol=1e-10).values[0])
    return np.array(tops)


def fit_laws(x: np.ndarray) -> dict:
    from scipy import stats

    loc, scale = stats.gumbel_r.fit(x)
    gumbel = stats.gumbel_r(loc, scale)
    a, gloc, gscale = stats.gamma.fit(x, f0=TW1_SHAPE)   # affine TW1 family = gamma with TW1's shape
    tw = stats.gamma(a, gloc, gscale)
    out = {}
    for name, dist in (("gumbel", gumbel), ("tracy_widom", tw)):
        ks = stats.kstest(x, dist.cdf)
        out[name] = {"ks": float(ks.statistic), "p": float(ks.pvalue), "dist": dist}
    return out


def run(cfg: FluctuationsConfig, ctx: RunContext) -> StudyResult:
    with torch_threads(1):  # hundreds of 97-parameter nets: per-op overhead dominates, threads only contend
        results = {}
        with ctx.progress.bar(2, "ensembles") as bar:
            for label, std in (("narrow", cfg.cluster_std), ("wide", cfg.wide_std)):
                X, y = two_blobs(cfg.n_train, std, cfg.seed)
                base, params, gnorm, losses = train_ensemble(cfg, X, y, cfg.seed)
                ok = np.isfinite(losses)
                if not ok.any():
                    from overparam.train import Diverged
                    raise Diverged(f"every net diverged at lr={cfg.lr}; lower the learning rate")
                tops = top_eigenvalues(cfg, base, params, X, y)
                results[label] = {"top": tops[ok], "gnorm": gnorm[ok], "loss": losses[ok], "std": std}
                bar.update(1)
    return _summarize(cfg, results)


def _summarize(cfg, results) -> StudyResult:
    top = results["narrow"]["top"]
    fits = fit_laws(top)
    better = min(fits, key=lambda k: fits[k]["ks"])
    cv = float(top.std() / abs(top.mean()))
    wide_mean, narrow_mean = float(results["wide"]["top"].mean()), float(top.mean())
    checks = [
        Check("the top eigenvalue fluctuates from run to run",
              "coefficient of variation of lambda_max over seeds > 5%",
              f"{100 * cv:.1f}% over {len(top)} seeds (mean {fmt(narrow_mean)})", cv > 0.05, SAGUN16),
        Check("wider blobs give larger top eigenvalues",
              f"mean lambda_max at blob std {fmt(cfg.wide_std)} > at {fmt(cfg.cluster_std)}",
              f"{fmt(wide_mean)} vs {fmt(narrow_mean)}", wide_mean > narrow_mean, SAGUN16),
        Check("an extreme-value law describes the fluctuations",
              "the better of Gumbel and Tracy-Widom (beta=1) not rejected by a KS test at the 1% level",
              f"{better}: KS {fmt(fits[better]['ks'])}, p = {fmt(fits[better]['p'])}; other: "
              + ", ".join(f"{k} KS {fmt(v['ks'])}" for k, v in fits.items() if k != better),
              fits[better]["p"] > 0.01, f"{SAGUN16}; the talk (top-eigenvalue histogram); {CHIANI}"),
    ]
    metrics = {"n_seeds": int(len(top)), "lambda_max_mean": narrow_mean, "lambda_max_std": float(top.std()),
               "lambda_max_cv": cv, "lambda_max_mean_wide": wide_mean, "better_fit": better,
               "ks_gumbel": fits["gumbel"]["ks"], "ks_tracy_widom": fits["tracy_widom"]["ks"],
               "p_gumbel": fits["gumbel"]["p"], "p_tracy_widom": fits["tracy_widom"]["p"],
               "median_grad_norm": float(np.median(results["narrow"]["gnorm"])),
               "median_train_loss": float(np.median(results["narrow"]["loss"]))}
    arrays = {"lambda_max": top, "lambda_max_wide": results["wide"]["top"], "grad_norm": results["narrow"]["gnorm"]}
    notes = (f"lambda_max over {len(top)} seeds: mean {fmt(narrow_mean)}, CV {100 * cv:.1f}%; "
             f"{better.replace('_', '-')} fits better (KS {fmt(fits['gumbel']['ks'])} Gumbel vs "
             f"{fmt(fits['tracy_widom']['ks'])} Tracy-Widom). Wider blobs: mean {fmt(wide_mean)}.")
    return StudyResult(metrics, checks, arrays, {"top_eigenvalue": _figure(cfg, results, fits)}, notes=notes)


def _figure(cfg, results, fits):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    top = results["narrow"]["top"]
    a.hist(top, bins=40, density=True, color="C0", alpha=0.6, label=f"{len(top)} seeds")
    t = np.linspace(top.min(), top.max(), 300)
    for name, color in (("gumbel", "C3"), ("tracy_widom", "C2")):
        a.plot(t, fits[name]["dist"].pdf(t), color=color, label=f"{name.replace('_', '-')} (KS {fits[name]['ks']:.3f})")
    a.set_xlabel("largest Hessian eigenvalue at the end of training")
    a.set_ylabel("density")
    a.set_title(f"MLP 2-{'-'.join(map(str, cfg.hidden))}-2 on two blobs (std {cfg.cluster_std})", fontsize=10)
    a.legend(fontsize=8)
    both = np.concatenate([results["narrow"]["top"], results["wide"]["top"]])
    bins = np.geomspace(both.min(), both.max(), 60) if both.min() > 0 else 60
    for label, color in (("narrow", "C0"), ("wide", "C1")):
        r = results[label]
        b.hist(r["top"], bins=bins, alpha=0.5, color=color, label=f"blob std {r['std']}")
    if both.min() > 0:
        b.set_xscale("log")
    b.set_ylabel("seeds")
    b.set_xlabel("largest eigenvalue")
    b.set_title("wider blobs, larger top eigenvalue", fontsize=10)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="eigenvalue-fluctuations",
    description="Top Hessian eigenvalue over hundreds of seeds: spread, Gumbel vs Tracy-Widom fits.",
    paper="Sagun, Bottou & LeCun 2016 (arXiv 1611.07476); Chiani 2014 (Tracy-Widom approximation)",
    config=FluctuationsConfig, presets=PRESETS, run=run))
