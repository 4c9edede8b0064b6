"""The Hessian of an over-parameterized net: a bulk at zero plus about one outlier per class.

Sagun, Bottou & LeCun 2016 ("Eigenvalues of the Hessian in deep learning") and Sagun, Evci, Guney,
Dauphin & Bottou 2017 (arXiv 1706.04454): after training, the spectrum of the loss Hessian of a
2-hidden-layer ReLU network on k Gaussian blobs is a bulk concentrated at zero and a few isolated large
eigenvalues; their number follows the number of classes (the data), widening the network only adds
eigenvalues to the bulk at zero, larger batches end with larger outliers, and the outliers come from the
Gauss-Newton term G of H = G + R (Papyan 2019: the class-means structure of G).

Outlier count (the gap rule, stated in the checks): with the eigenvalues sorted descending, the number of
outliers is the rank i <= 3k at which the ratio lambda_i / lambda_{i+1} is largest, i.e. the top of the
spectrum is cut at its largest relative gap. The loss is squared error on one-hot targets by default:
there the Gauss-Newton term has one outlier per class; with cross-entropy the softmax's Hessian has rank
k-1 and the gap is less sharp (``loss=cross_entropy`` shows it).

Measured here, and why the k sweep starts at 4: for k = 2 and 3 the gap rule finds k^2 (4 and 9) eigenvalues
above the bulk, not k -- Papyan's second level (the k(k-1) cross-class terms of G) is still separated from the
bulk at so few classes; from k = 4 on the largest gap falls right after the k class outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.measure.hessian import (
    GaussNewtonOperator,
    HessianOperator,
    ResidualOperator,
    hessian_density,
    hessian_eigs,
)
from overparam.models import MLP, mlp_parameter_count, seeded
from overparam.studies.base import (Check, FLOAT64, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext, Study, StudyResult,
                                    fmt, register)
from overparam.train import Diverged, TrainConfig, train
from overparam.train.parallel import torch_threads

SAGUN16 = "Sagun, Bottou & LeCun 2016 (arXiv 1611.07476), Sec. 3, Figs. 1-3"
SAGUN17 = "Sagun et al. 2017 (arXiv 1706.04454), Sec. 3-4"
PAPYAN = "Papyan 2019 (arXiv 1901.08244): outliers from the class means of the Gauss-Newton term"
KESKAR = "Keskar et al. 2016 (large-batch training ends in sharper minima)"


@dataclass
class HessianSpectrumConfig(StudyConfig):
    k: int = param(4, "classes (Gaussian blobs) of the base configuration", min=2, max=200)
    k_values: list[int] = param([4, 6, 8, 10], "class counts of the k sweep", min=2, max=200)
    d: int = param(20, "input dimension", min=1, max=100_000)
    n_train: int = param(800, "training examples", min=10, max=MAX_EXAMPLES)
    cluster_std: float = param(1.0, "standard deviation of each blob", min=0.0, max=1e3)
    center_box: float = param(10.0, "blob centers uniform in [-c, c]^d", min=0.1, max=1e6)
    width: int = param(16, "hidden width of the base configuration (2 hidden layers)", min=1, max=MAX_WIDTH)
    widths: list[int] = param([8, 16, 32], "widths of the width sweep", min=1, max=MAX_WIDTH)
    loss: str = param("mse", "training loss: mse on one-hot targets, or cross_entropy",
                      choices=("mse", "cross_entropy"))
    lr: float = param(0.05, "constant SGD step", min=1e-6, max=10.0)
    steps: int = param(3000, "SGD steps of every run", min=1, max=MAX_STEPS)
    batch_size: int = param(32, "minibatch size of the k and width sweeps", min=1, max=MAX_EXAMPLES)
    batch_sizes: list[int] = param([8, 800], "small and large batch of the batch-size comparison", min=1,
                                   max=MAX_EXAMPLES)
    dense_limit: int = param(2500, "largest parameter count measured by a dense eigendecomposition "
                                   "(beyond it: eigsh for the top and SLQ for the bulk)", min=10, max=50_000)
    zero_rtol: float = param(1e-3, "eigenvalues with |lambda| < zero_rtol * lambda_max count as the bulk at zero",
                             min=0.0, max=0.5)

    def validate(self) -> None:
        for name in ("k_values", "widths"):
            values = getattr(self, name)
            if len(values) < 2 or sorted(values) != list(values) or len(set(values)) != len(values):
                raise ConfigError(f"{name}: need at least 2 strictly increasing values, e.g. 2,4,8")
        if len(self.batch_sizes) != 2 or self.batch_sizes[0] >= self.batch_sizes[1]:
            raise ConfigError("batch_sizes: give two sizes, small then large, e.g. 8,800")
        if self.k not in self.k_values:
            raise ConfigError(f"k: {self.k} must be one of k_values {self.k_values} (the base run is shared)")
        if self.width not in self.widths:
            raise ConfigError(f"width: {self.width} must be one of widths {self.widths} (the base run is shared)")

    def peak_bytes(self) -> dict[str, float]:
        """The dense Hessian, Gauss-Newton matrix and eigenvectors of the largest net measured densely, the
        SLQ Lanczos vectors of the others, and the blobs with their float64 activations."""
        nets = ([(k, self.width) for k in self.k_values] + [(self.k, w) for w in self.widths])
        sizes = [mlp_parameter_count(self.d, [w, w], k) for k, w in nets]
        dense = max((P for P in sizes if P <= self.dense_limit), default=0)
        return {"dense_limit": FLOAT64 * 3 * dense ** 2, "widths": FLOAT64 * 100 * max(sizes),
                "n_train": FLOAT64 * 3 * self.n_train * (self.d + 2 * max(self.widths) + max(self.k_values))}


PRESETS = {
    # ~25 s on 2 cores: 8 small nets (<= 1.9K parameters), dense spectra.
    "quick": {},
    # The talk's setting: 50 blobs in 100 dimensions; wider nets; spectra by eigsh (top) + SLQ (bulk).
    "paper": {"k": 50, "k_values": [10, 20, 30, 50], "d": 100, "n_train": 5000, "center_box": 10.0,
              "cluster_std": 1.5, "width": 100, "widths": [50, 100, 200], "steps": 20000, "lr": 0.1,
              "batch_size": 32, "batch_sizes": [10, 5000]},
}


def count_outliers(top_desc: np.ndarray, k: int) -> int:
    """The gap rule: cut the (descending, positive) top of the spectrum at its largest ratio lambda_i/lambda_{i+1}."""
    top = np.asarray(top_desc[:3 * k + 1], dtype=float)
    pos = top[top > 0]
    if len(pos) < 2:
        return len(pos)
    ratios = pos[:-1] / pos[1:]
    return int(np.argmax(ratios)) + 1


def _train_net(cfg: HessianSpectrumConfig, k: int, width: int, batch: int, data, progress, desc):
    model = seeded(lambda: MLP(cfg.d, [width, width], k), seed=cfg.seed * 1_000_003 + 7 * width + k)
    tcfg = TrainConfig(optimizer="sgd", lr=cfg.lr, batch_size=min(batch, len(data.X_train)), steps=cfg.steps,
                       loss=cfg.loss, dtype="float64", eval_every=10**12, seed=cfg.seed)
    hist = train(model, data.X_train, data.y_train, tcfg, n_classes=k, progress=progress, desc=desc)
    if hist.diverged:
        raise Diverged(f"k={k}, width={width}, batch={batch} diverged at step {hist.diverged_at} "
                       f"(lr={cfg.lr}); lower the learning rate")
    return model, hist.final()


def _spectrum(cfg, model, data, k: int) -> dict:
    """Top of the spectrum, the fraction at zero, and (small nets) every eigenvalue."""
    op = HessianOperator(model, cfg.loss, (data.X_train, data.y_train))
    m = 3 * k + 1
    if op.dim <= cfg.dense_limit:
        ev = torch.linalg.eigvalsh(op.dense()).numpy()[::-1].copy()
        lam1 = ev[0]
        return {"P": op.dim, "top": ev[:m], "all": ev, "zero_frac": float((np.abs(ev) < cfg.zero_rtol * lam1).mean()),
                "neg_frac": float((ev < -cfg.zero_rtol * lam1).mean()), "method": "dense", "op": op}
    top = hessian_eigs(op, k=m, which="largest").values
    dens = hessian_density(op, n_vectors=10, n_steps=90, seed=cfg.seed)
    lam1 = top[0]
    zero = float(dens.weights[np.abs(dens.nodes) < cfg.zero_rtol * lam1].sum())
    return {"P": op.dim, "top": top, "all": None, "zero_frac": zero, "neg_frac": dens.mass_below(-cfg.zero_rtol * lam1),
            "method": "eigsh+slq", "op": op, "density": dens}


def _split(cfg, model, data, k: int, spec: dict) -> dict:
    """Top eigenvalues of H and of its Gauss-Newton part G, and the spectral norm of R = H - G."""
    args = (model, cfg.loss, (data.X_train, data.y_train))
    m = 3 * k + 1
    if spec["P"] <= cfg.dense_limit:
        G = GaussNewtonOperator(*args).dense()
        H = spec["op"].dense()
        g = torch.linalg.eigvalsh(G).numpy()[::-1][:m].copy()
        r = torch.linalg.eigvalsh(H - G).numpy()
    else:
        g = hessian_eigs(GaussNewtonOperator(*args), k=m).values
        r = hessian_eigs(ResidualOperator(*args), k=2, which="both").values
    return {"G_top": g, "R_norm": float(np.abs(r).max()), "R_range": (float(r.min()), float(r.max()))}


def run(cfg: HessianSpectrumConfig, ctx: RunContext) -> StudyResult:
    # Nets of a few thousand parameters run ~10x faster on one thread on a 2-core machine (per-op overhead
    # and contention dominate); larger ones keep torch's setting. The caller's setting is restored.
    largest = max(cfg.widths) * (cfg.d + max(cfg.widths) + max(cfg.k_values) + 2)
    with torch_threads(1 if largest < 20_000 else None):
        return _run(cfg, ctx)


def _run(cfg: HessianSpectrumConfig, ctx: RunContext) -> StudyResult:
    datasets = {k: load_dataset("blobs", seed=cfg.seed, n_train=cfg.n_train, n_test=10, k=k, d=cfg.d,
                                cluster_std=cfg.cluster_std, center_box=(-cfg.center_box, cfg.center_box))
                for k in cfg.k_values}
    runs: dict[tuple[int, int, int], dict] = {}
    plan = [(k, cfg.width, cfg.batch_size) for k in cfg.k_values]
    plan += [(cfg.k, w, cfg.batch_size) for w in cfg.widths if w != cfg.width]
    plan += [(cfg.k, cfg.width, b) for b in cfg.batch_sizes if b != cfg.batch_size]
    for i, (k, w, b) in enumerate(plan):
        model, final = _train_net(cfg, k, w, b, datasets[k], ctx.progress, f"k={k} width={w} batch={b} ({i + 1}/{len(plan)})")
        spec = _spectrum(cfg, model, datasets[k], k)
        spec["n_out"] = count_outliers(spec["top"], k)
        spec["train_loss"], spec["train_error"] = final["train_loss"], final["train_error"]
        if (k, w, b) == (cfg.k, cfg.width, cfg.batch_size):
            spec.update(_split(cfg, model, datasets[k], k, spec))
        spec.pop("op")
        runs[(k, w, b)] = spec
    return _summarize(cfg, runs)


def _summarize(cfg: HessianSpectrumConfig, runs: dict) -> StudyResult:
    base = runs[(cfg.k, cfg.width, cfg.batch_size)]
    k_runs = [runs[(k, cfg.width, cfg.batch_size)] for k in cfg.k_values]
    w_runs = [runs[(cfg.k, w, cfg.batch_size)] for w in cfg.widths]
    b_runs = [runs[(cfg.k, cfg.width, b)] for b in cfg.batch_sizes]
    n_out_k = [r["n_out"] for r in k_runs]
    n_out_w = [r["n_out"] for r in w_runs]
    zeros_w = [r["zero_frac"] * r["P"] for r in w_runs]
    params_w = [r["P"] for r in w_runs]
    top_b = [float(np.mean(r["top"][:cfg.k])) for r in b_runs]
    h_top, g_top = base["top"][:cfg.k], base["G_top"][:cfg.k]
    g_rel = float(np.max(np.abs(g_top - h_top) / np.abs(h_top)))
    lam_k = float(h_top[-1])
    gap_txt = "n_out = argmax_{i<=3k} lambda_i/lambda_{i+1}"
    checks = [
        Check("outliers follow the number of classes",
              f"about k: |n_out - k| <= 1 for every k in {cfg.k_values}, and n_out increasing with k ({gap_txt})",
              ", ".join(f"k={k}: {n}" for k, n in zip(cfg.k_values, n_out_k)),
              all(abs(n - k) <= 1 for k, n in zip(cfg.k_values, n_out_k)) and bool(np.all(np.diff(n_out_k) > 0)),
              f"{SAGUN17}; the talk: k blobs -> about k large eigenvalues"),
        Check("bulk concentrated at zero",
              f"more than half of the eigenvalues within {fmt(cfg.zero_rtol)} x lambda_max of 0 (k={cfg.k}, width {cfg.width})",
              f"{100 * base['zero_frac']:.1f}% of {base['P']}", base["zero_frac"] > 0.5, SAGUN16),
        Check("width only adds zeros",
              f"eigenvalues at zero increase with width and n_out stays k={cfg.k} (+-1) at widths {cfg.widths}",
              "zeros " + ", ".join(f"{int(round(z))}/{p}" for z, p in zip(zeros_w, params_w))
              + "; n_out " + ", ".join(map(str, n_out_w)),
              bool(np.all(np.diff(zeros_w) > 0)) and all(abs(n - cfg.k) <= 1 for n in n_out_w), SAGUN16),
        Check("larger batches end with larger outliers",
              f"mean of the top {cfg.k} eigenvalues: batch {cfg.batch_sizes[1]} > batch {cfg.batch_sizes[0]} "
              f"(same lr {fmt(cfg.lr)}, same {cfg.steps} steps)",
              f"{fmt(top_b[1])} vs {fmt(top_b[0])}", top_b[1] > top_b[0], f"{SAGUN17}; {KESKAR}"),
        Check("the outliers come from the Gauss-Newton term",
              f"top-{cfg.k} eigenvalues of G within 5% of those of H, and ||H - G|| < lambda_{cfg.k}(H) / 2",
              f"max relative difference {100 * g_rel:.2f}%; ||R|| = {fmt(base['R_norm'])} vs lambda_{cfg.k} = {fmt(lam_k)}",
              g_rel < 0.05 and base["R_norm"] < 0.5 * lam_k, f"{SAGUN17}; {PAPYAN}"),
    ]
    metrics = {
        "n_outliers_base": base["n_out"], "params_base": base["P"], "lambda_max_base": float(base["top"][0]),
        "zero_fraction_base": base["zero_frac"], "negative_fraction_base": base["neg_frac"],
        "k_values": list(cfg.k_values), "n_outliers_vs_k": n_out_k,
        "widths": list(cfg.widths), "params_vs_width": params_w, "zeros_vs_width": [int(round(z)) for z in zeros_w],
        "n_outliers_vs_width": n_out_w, "batch_sizes": list(cfg.batch_sizes), "mean_top_k_vs_batch": top_b,
        "gauss_newton_top_rel_diff": g_rel, "residual_norm": base["R_norm"],
        "train_loss_base": base["train_loss"], "spectrum_method": base["method"],
    }
    arrays = {"top_base": base["top"], "G_top_base": base["G_top"]}
    if base["all"] is not None:
        arrays["eigenvalues_base"] = base["all"]
    for (k, w, b), r in runs.items():
        arrays[f"top_k{k}_w{w}_b{b}"] = r["top"]
    notes = (f"k={cfg.k} blobs, width {cfg.width}: {base['n_out']} outliers above a bulk holding "
             f"{100 * base['zero_frac']:.0f}% of the {base['P']} eigenvalues at zero. Outliers vs k: "
             + ", ".join(f"{k}->{n}" for k, n in zip(cfg.k_values, n_out_k))
             + f". Batch {cfg.batch_sizes[1]} vs {cfg.batch_sizes[0]}: top-{cfg.k} mean {fmt(top_b[1])} vs {fmt(top_b[0])}.")
    figures = {"spectrum": _fig_spectrum(cfg, base), "outliers_vs_k": _fig_k(cfg, k_runs),
               "width_and_batch": _fig_width_batch(cfg, w_runs, b_runs), "gauss_newton": _fig_gn(cfg, base)}
    return StudyResult(metrics, checks, arrays, figures, notes=notes)


# ----------------------------------------------------------------------------------------------- figures
def _rank_plot(ax, top, n_out, label, color):
    ranks = np.arange(1, len(top) + 1)
    ax.plot(ranks, top, "o-", ms=4, color=color, label=label)
    if 0 < n_out < len(top):
        ax.plot(ranks[:n_out], top[:n_out], "o", ms=7, mfc="none", color=color)


def _fig_spectrum(cfg, base):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if base["all"] is not None:
        a.hist(base["all"], bins=120, color="C0")
        a.set_yscale("log")
        a.set_xlabel("eigenvalue")
        a.set_ylabel("count")
    else:
        dens = base["density"]
        a.plot(dens.grid, dens.density)
        a.set_yscale("log")
        a.set_xlabel("eigenvalue")
        a.set_ylabel("density (SLQ)")
    a.set_title(f"Hessian spectrum: k={cfg.k} blobs, width {cfg.width}, P={base['P']}", fontsize=10)
    _rank_plot(b, base["top"], base["n_out"], f"top {len(base['top'])}", "C0")
    if base["n_out"] < len(base["top"]):
        b.axvline(base["n_out"] + 0.5, color="C3", ls=":", label=f"largest gap: {base['n_out']} outliers")
    b.set_xlabel("rank")
    b.set_ylabel("eigenvalue")
    b.legend(fontsize=8)
    b.set_title("top of the spectrum (circled: outliers by the gap rule)", fontsize=10)
    fig.tight_layout()
    return fig


def _fig_k(cfg, k_runs):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (k, r) in enumerate(zip(cfg.k_values, k_runs)):
        _rank_plot(a, r["top"] / r["top"][0], r["n_out"], f"k={k}", f"C{i}")
    a.set_yscale("log")
    a.set_xlabel("rank")
    a.set_ylabel("eigenvalue / largest")
    a.legend(fontsize=8)
    a.set_title("top eigenvalues per number of blobs", fontsize=10)
    ks = np.array(cfg.k_values)
    b.plot(ks, [r["n_out"] for r in k_runs], "o-", label="measured (gap rule)")
    b.plot(ks, ks, "k--", lw=1, label="n_out = k (Sagun et al. 2017)")
    b.set_xlabel("k (classes)")
    b.set_ylabel("outliers")
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_width_batch(cfg, w_runs, b_runs):
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (w, r) in enumerate(zip(cfg.widths, w_runs)):
        if r["all"] is not None:
            ev = r["all"]
            a.plot(np.arange(1, len(ev) + 1) / len(ev), ev / ev[0], color=f"C{i}",
                   label=f"width {w} (P={r['P']}): {100 * r['zero_frac']:.0f}% at zero")
        else:
            a.plot(np.arange(1, len(r["top"]) + 1) / r["P"], r["top"] / r["top"][0], "o", color=f"C{i}",
                   label=f"width {w} (P={r['P']}): {100 * r['zero_frac']:.0f}% at zero")
    a.set_xscale("log")
    a.set_xlabel("rank / P")
    a.set_ylabel("eigenvalue / largest")
    a.set_title("more parameters add eigenvalues at zero", fontsize=10)
    a.legend(fontsize=8)
    for i, (bs, r) in enumerate(zip(cfg.batch_sizes, b_runs)):
        _rank_plot(b, r["top"], r["n_out"], f"batch {bs} (loss {r['train_loss']:.2g})", f"C{i}")
    b.set_xlabel("rank")
    b.set_ylabel("eigenvalue")
    b.set_title("larger batch, larger outliers", fontsize=10)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_gn(cfg, base):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ranks = np.arange(1, len(base["top"]) + 1)
    ax.plot(ranks, base["top"], "o-", label="H (Hessian)")
    ax.plot(ranks[:len(base["G_top"])], base["G_top"], "x--", label="G (Gauss-Newton)")
    lo, hi = base["R_range"]
    ax.axhspan(lo, hi, color="C3", alpha=0.2, label=f"range of the spectrum of H - G [{lo:.2g}, {hi:.2g}]")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.set_title(f"H = G + R: the outliers are G's (k={cfg.k})", fontsize=10)
    ax.legend(fontsize=8)
    return fig


STUDY = register(Study(
    name="hessian-spectrum",
    description="Hessian after training: a bulk at zero plus ~k outliers (k classes); width adds zeros.",
    paper="Sagun, Bottou & LeCun 2016; Sagun et al. 2017 (arXiv 1706.04454); Papyan 2019",
    config=HessianSpectrumConfig, presets=PRESETS, run=run))
