"""Small vs large batch: sharp and flat minima (Keskar et al. 2016), and the "twist" (Sagun et al. 2017).

Keskar et al. 2016 (arXiv 1609.04836): trained to the same training loss, large-batch (LB, >= 10% of the
data) solutions are sharper than small-batch (SB) ones -- their box sharpness (metric 4) and the curvature of
the loss along the line between the two are larger -- and they generalize worse (Table 2).
Sagun et al. 2017 (arXiv 1706.04454, sec. 4): continue the LB solution with SB. SGD's training loss first
climbs and then falls, as if it crossed a barrier into another basin; yet the straight line between the LB
solution and where SB took it shows no barrier: the two lie in one connected flat basin.

Here: one in-h-...-out MLP, plain SGD at one learning rate, SB and LB from the same initializations (each seed
trained as one vmap ensemble), each stopped at the first chunk boundary where its training loss is <= the
target (so both sit at the same training loss); then the LB solutions continue with SB until their training
loss is back at the target. Instruments from ``overparam.measure``: ``sharpness`` (Keskar box + top Hessian eigenvalue),
``interpolate`` along three lines (SB-LB, LB-(LB then SB), SB-(LB then SB)), extended beyond both ends, and
``landscape`` (1-D and 2-D filter-normalized slices, Li et al. 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.measure import interpolate, landscape, sharpness
from overparam.models import MLP, count_parameters, mlp_parameter_count, seeded
from overparam.studies.base import (Check, DATASET_SHAPES, FLOAT64, MAX_EPOCHS, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH,
                                    RunContext, Study, StudyResult, check_data_keys, data_bytes, fmt,
                                    mlp_training_bytes, register)
from overparam.train import Ensemble, TrainConfig, evaluate, loss_function
from overparam.train.target import Fitted, train_to_target

KESKAR = "Keskar et al. 2016 (arXiv 1609.04836)"
SAGUN = "Sagun et al. 2017 (arXiv 1706.04454), sec. 4 (SB and LB connected through a flat region)"
LINES = ("sb_lb", "lb_lbsb", "sb_lbsb")
LINE_NAMES = {"sb_lb": "SB -> LB", "lb_lbsb": "LB -> LB then SB", "sb_lbsb": "SB -> LB then SB"}


# ------------------------------------------------------------------------------------------------- config
@dataclass
class BatchSizeConfig(StudyConfig):
    dataset: str = param("mnist1d", "training data", choices=("mnist1d", "digits", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int = param(4000, "training examples", min=50, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    width: int = param(256, "hidden width of the MLP", min=1, max=MAX_WIDTH)
    depth: int = param(2, "number of hidden layers", min=1, max=8)
    lr: float = param(0.1, "SGD learning rate (the same for SB, LB and the continuation)", min=1e-6, max=10.0)
    small_batch: int = param(32, "SB batch size", min=1, max=MAX_EXAMPLES)
    large_batch: int = param(400, "LB batch size (Keskar et al.: >= 10% of the training set)", min=2, max=MAX_EXAMPLES)
    target_loss: float = param(0.01, "both are stopped at the first chunk where the training loss is <= this",
                               min=1e-6, max=10.0)
    max_steps: int = param(50_000, "step cap for reaching the target (per batch size)", min=1, max=MAX_STEPS)
    chunk_steps: int = param(50, "check the target every this many steps (rounded up to whole epochs)", min=1,
                             max=MAX_STEPS)
    continue_epochs: int = param(1, "SB from the LB solution runs at least this many epochs, then until the "
                                    "training loss is back at the target", min=1, max=MAX_EPOCHS)
    seeds: int = param(3, "initializations (each SB/LB pair shares one), trained as vmap ensembles", min=1, max=32)
    eps: float = param(1e-3, "Keskar box size epsilon (they used 1e-3 and 5e-4)", min=1e-8, max=1.0)
    subspace: int = param(0, "Keskar sharpness in a random subspace of this dimension (0: full space)", min=0,
                          max=100_000)
    sharpness_iters: int = param(100, "L-BFGS-B iterations of the sharpness maximization", min=1, max=100_000)
    interp_steps: int = param(21, "points of each interpolation in [0, 1]", min=2, max=10_000)
    interp_extend: float = param(1.0, "interpolations continue this far beyond each end (Keskar: 1, alpha in "
                                      "[-1, 2])", min=0.0, max=5.0)
    landscape_steps: int = param(41, "points per axis of the 1-D and 2-D landscapes", min=3, max=1000)
    landscape_span: float = param(0.5, "landscape coordinates run over [-span, span] (filter-normalized units)",
                                  min=1e-3, max=10.0)
    barrier_tol: float = param(0.05, "largest loss barrier (absolute, in nats) that counts as 'no barrier'",
                               min=0.0, max=10.0)

    def validate(self) -> None:
        if self.large_batch <= self.small_batch:
            raise ConfigError("large_batch: must be larger than small_batch")
        if self.large_batch < 0.1 * self.n_train:
            raise ConfigError(f"large_batch: Keskar et al.'s LB regime is >= 10% of the data, i.e. >= "
                              f"{math.ceil(0.1 * self.n_train)} for n_train={self.n_train}")
        if self.large_batch > self.n_train:
            raise ConfigError(f"large_batch: at most n_train={self.n_train}")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        d, k, _, _ = DATASET_SHAPES[self.dataset]
        hidden = [self.width] * self.depth
        return {**data_bytes(self.dataset, self.n_train, self.n_test),
                "width": mlp_training_bytes(2 * self.seeds, d, hidden, k, self.large_batch),
                "subspace": FLOAT64 * self.subspace * mlp_parameter_count(d, hidden, k)}


PRESETS = {
    # MNIST-1D, 1000 examples, 40-64-64-10 (7.5K params), SB 16 vs LB 200 (20%); ~25 s on one core.
    "quick": {"n_train": 1000, "n_test": 1000, "width": 64, "small_batch": 16, "large_batch": 200,
              "target_loss": 0.02, "seeds": 2, "max_steps": 20_000,
              "sharpness_iters": 20, "interp_steps": 11, "landscape_steps": 21},
    # Keskar et al.'s F1-like setting scaled to MNIST-1D: 4000 examples, 256-wide, SB 32 vs LB 400 (10%),
    # full-space sharpness with 100 L-BFGS-B iterations at eps 1e-3, 3 seeds.
    "paper": {"n_train": 4000, "width": 256, "small_batch": 32, "large_batch": 400, "target_loss": 0.01,
              "seeds": 3, "sharpness_iters": 100},
}


# ----------------------------------------------------------------------------------------------------- run
def run(cfg: BatchSizeConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    ds = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                      data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    X, y, Xt, yt, C = ds.X_train, ds.y_train, ds.X_test, ds.y_test, ds.n_classes
    hidden = [cfg.width] * cfg.depth
    build = lambda: MLP(ds.input_dim, hidden, C)  # noqa: E731
    init_seeds = [cfg.seed * 1_000_003 + 17 * r + 1 for r in range(cfg.seeds)]
    data_seeds = [cfg.seed * 7919 + r for r in range(cfg.seeds)]
    lf = loss_function("cross_entropy", C)
    bar = ctx.progress.bar(3, "batch-size: SB, LB, LB then SB")

    def fit(batch: int, desc: str) -> Fitted:
        ens = Ensemble([seeded(build, s) for s in init_seeds])
        tcfg = TrainConfig(optimizer="sgd", lr=cfg.lr, batch_size=batch, seed=cfg.seed)
        return train_to_target(ens, X, y, tcfg, C, cfg.target_loss, cfg.max_steps, cfg.chunk_steps,
                               data_seeds=data_seeds, desc=desc)

    with bar as b:
        sb = fit(cfg.small_batch, "SB")
        b.update(1)
        lb = fit(cfg.large_batch, "LB")
        b.update(1)
        # continue LB with SB to the same target, recording the full training loss after every epoch
        ens = Ensemble(lb.models)
        curve = [lb.value.copy()]
        tcfg = TrainConfig(optimizer="sgd", lr=cfg.lr, batch_size=cfg.small_batch, seed=cfg.seed * 31 + 7)
        lbsb = train_to_target(ens, X, y, tcfg, C, cfg.target_loss, cfg.max_steps, chunk_steps=1,
                               data_seeds=[s + 101 for s in data_seeds], desc="LB then SB",
                               progress=lambda steps, val: curve.append(val.copy()),
                               min_steps=math.ceil(len(X) / cfg.small_batch) * cfg.continue_epochs)
        b.update(1)
    cont_curve = np.stack(curve)          # (epochs + 1, seeds), row 0 = the LB solution

    sols = {"sb": sb.models, "lb": lb.models, "lbsb": lbsb.models}
    per = {k: {"train_loss": [], "train_error": [], "test_loss": [], "test_error": [], "sharpness": [],
               "top_eig": []} for k in sols}
    n_params = count_parameters(sb.models[0], trainable_only=False)
    sub = min(cfg.subspace, n_params) if cfg.subspace else None
    bar = ctx.progress.bar(3 * cfg.seeds, "batch-size: sharpness + top Hessian eigenvalue")
    with bar as b:
        for r in range(cfg.seeds):
            for k, models in sols.items():
                m = models[r].eval()
                tr, te = evaluate(m, X, y, lf), evaluate(m, Xt, yt, lf)
                s = sharpness(m, "cross_entropy", (X, y), eps=cfg.eps, subspace=sub, seed=cfg.seed + r,
                              maxiter=cfg.sharpness_iters, hessian=True, pacbayes=False, num_threads=1)
                for key, v in zip(("train_loss", "train_error", "test_loss", "test_error", "sharpness", "top_eig"),
                                  (*tr, *te, s.sharpness, s.top_eigenvalue)):
                    per[k][key].append(float(v))
                b.update(1)
    pairs = {"sb_lb": ("sb", "lb"), "lb_lbsb": ("lb", "lbsb"), "sb_lbsb": ("sb", "lbsb")}
    lines = {name: {"train": [], "test": []} for name in pairs}
    with ctx.progress.bar(len(pairs) * cfg.seeds, "batch-size: interpolations") as b:
        for r in range(cfg.seeds):
            for name, (a, c) in pairs.items():
                for split, data in (("train", (X, y)), ("test", (Xt, yt))):
                    lines[name][split].append(interpolate(sols[a][r], sols[c][r], "cross_entropy", data,
                                                          steps=cfg.interp_steps, extend=cfg.interp_extend,
                                                          num_threads=1))
                b.update(1)
    with ctx.progress.bar(5, "batch-size: landscapes") as b:
        land1 = {}
        for k in sols:
            land1[k] = landscape(sols[k][0], "cross_entropy", (X, y), dims=1, span=cfg.landscape_span,
                                 steps=cfg.landscape_steps, seed=cfg.seed, num_threads=1)
            b.update(1)
        land2 = {}
        for k in ("sb", "lb"):
            land2[k] = landscape(sols[k][0], "cross_entropy", (X, y), dims=2, span=cfg.landscape_span,
                                 steps=cfg.landscape_steps, seed=cfg.seed, num_threads=1)
            b.update(1)
    summary = {k: {key: np.array(v) for key, v in d.items()} for k, d in per.items()}
    barriers = {name: np.array([i.loss_barrier for i in lines[name]["train"]]) for name in pairs}
    err_barriers = {name: np.array([i.error_barrier for i in lines[name]["train"]]) for name in pairs}
    climb = cont_curve.max(0) - cont_curve[0]
    result = summarize(cfg, summary, barriers, climb, sb, lb, lbsb)
    result.metrics.update({"n_params": int(n_params), "lb_fraction": cfg.large_batch / len(X),
                           "steps_lbsb": lbsb.steps.tolist(),
                           "interpolation_error_barrier": {k: v.tolist() for k, v in err_barriers.items()},
                           "landscape_1d_rise": {k: float(np.nanmax(v.loss) - v.center_loss)
                                                 for k, v in land1.items()}})
    result.arrays.update({
        "continue_train_loss": cont_curve,
        **{f"interp_{n}_alphas": lines[n]["train"][0].alphas for n in pairs},
        **{f"interp_{n}_{s}_loss": np.stack([i.loss for i in lines[n][s]]) for n in pairs for s in ("train", "test")},
        **{f"interp_{n}_{s}_error": np.stack([i.error for i in lines[n][s]]) for n in pairs for s in ("train", "test")},
        **{f"landscape1d_{k}_loss": v.loss for k, v in land1.items()},
        "landscape1d_alphas": land1["sb"].alphas,
        **{f"landscape2d_{k}_loss": v.loss for k, v in land2.items()},
        "landscape2d_alphas": land2["sb"].alphas,
    })
    result.figures.update({
        "landscape": landscape_figure(land1, land2),
        "interpolation": interpolation_figure(lines, cont_curve, cfg),
    })
    return result


# ------------------------------------------------------------------------------------------------- summary
def summarize(cfg, per: dict, barriers: dict, climb: np.ndarray, sb: Fitted | None = None,
              lb: Fitted | None = None, lbsb: Fitted | None = None) -> StudyResult:
    """Checks from per-solution arrays (``per[k][key]``, k in sb/lb/lbsb, one entry per seed) and the loss
    barriers of the three lines (one per seed). Pure: the tests drive it with synthetic numbers."""
    mean = {k: {key: float(np.mean(v)) for key, v in d.items()} for k, d in per.items()}
    ratio = mean["lb"]["sharpness"] / max(mean["sb"]["sharpness"], 1e-300)
    eig_ratio = mean["lb"]["top_eig"] / max(mean["sb"]["top_eig"], 1e-300)
    wins = int(np.sum(per["lb"]["sharpness"] > per["sb"]["sharpness"]))
    n = len(per["sb"]["sharpness"])
    gap = mean["lb"]["test_error"] - mean["sb"]["test_error"]
    twist = float(np.max(barriers["lb_lbsb"]))
    reached = (sb is None or sb.reached.all()) and (lb is None or lb.reached.all())
    back = lbsb is None or lbsb.reached.all()
    checks = [
        Check("LB solutions are sharper than SB (Keskar sharpness)",
              f"mean sharpness (eps={cfg.eps:g}) of LB > SB; Keskar et al. report LB 1-2 orders of magnitude above SB",
              f"LB {fmt(mean['lb']['sharpness'])} vs SB {fmt(mean['sb']['sharpness'])} (x{fmt(ratio)}; "
              f"LB sharper in {wins}/{n} seeds)",
              bool(mean["lb"]["sharpness"] > mean["sb"]["sharpness"]), KESKAR + ", Table 3"),
        Check("LB solutions have a larger top Hessian eigenvalue",
              "mean top eigenvalue of LB > SB (the curvature behind Keskar's sharp minima)",
              f"LB {fmt(mean['lb']['top_eig'])} vs SB {fmt(mean['sb']['top_eig'])} (x{fmt(eig_ratio)})",
              bool(mean["lb"]["top_eig"] > mean["sb"]["top_eig"]), KESKAR + ", sec. 2.2; " + SAGUN),
        Check("LB generalizes no better than SB (the generalization gap)",
              "mean test error of LB >= SB, both at the same training loss",
              f"LB {100 * mean['lb']['test_error']:.1f}% vs SB {100 * mean['sb']['test_error']:.1f}% "
              f"({100 * gap:+.1f} points); train loss LB {fmt(mean['lb']['train_loss'])}, "
              f"SB {fmt(mean['sb']['train_loss'])}" + ("" if reached else " (target NOT reached by all)"),
              bool(gap >= 0 and reached), KESKAR + ", Table 2"),
        Check("the twist: no barrier between LB and where SB takes it",
              f"loss barrier on the line LB -> (LB then SB) <= {cfg.barrier_tol:g} in every seed, although "
              "SGD's own path climbs",
              f"barrier {fmt(twist)} (max over seeds); SGD path climbed {fmt(float(np.max(climb)))} above the LB loss"
              + ("" if back else "; LB then SB did NOT get back to the target loss"),
              bool(twist <= cfg.barrier_tol and back), SAGUN),
    ]
    metrics = {
        **{f"{k}_{key}": v for k, d in mean.items() for key, v in d.items()},
        "sharpness_ratio_lb_sb": ratio, "top_eig_ratio_lb_sb": eig_ratio, "test_error_gap_lb_sb": gap,
        "loss_barrier": {name: barriers[name].tolist() for name in barriers},
        "continue_climb": climb.tolist(),
        "steps_sb": None if sb is None else sb.steps.tolist(), "steps_lb": None if lb is None else lb.steps.tolist(),
        "target_reached": bool(reached), "lbsb_back_at_target": bool(back),
    }
    arrays = {f"{k}_{key}": np.asarray(v) for k, d in per.items() for key, v in d.items()}
    notes = (f"At the same training loss (~{cfg.target_loss:g}) LB (batch {cfg.large_batch}) has {fmt(ratio)}x the "
             f"Keskar sharpness and {fmt(eig_ratio)}x the top Hessian eigenvalue of SB (batch {cfg.small_batch}), "
             f"and {100 * gap:+.1f} points of test error. Continued with SB, the LB solution's training loss "
             f"climbs by up to {fmt(float(np.max(climb)))} before falling, yet the straight line back to the LB "
             f"solution has a loss barrier of at most {fmt(twist)}; the SB-LB line's barrier is at most "
             f"{fmt(float(np.max(barriers['sb_lb'])))}.")
    return StudyResult(metrics, checks, arrays, {}, notes=notes)


# ------------------------------------------------------------------------------------------------- figures
def landscape_figure(land1: dict, land2: dict):
    import matplotlib.pyplot as plt

    names = {"sb": "SB", "lb": "LB", "lbsb": "LB then SB"}
    fig, axes = plt.subplots(1, 1 + len(land2), figsize=(5.5 + 5 * len(land2), 4.4),
                             gridspec_kw={"wspace": 0.35})
    ax = axes[0]
    for i, (k, l) in enumerate(land1.items()):
        ax.plot(l.alphas, l.loss, "-", color=f"C{i}", label=f"{names[k]} (center {l.center_loss:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("alpha (filter-normalized direction)")
    ax.set_ylabel("training loss")
    ax.set_title("1-D filter-normalized slices", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lo = min(float(np.log10(max(np.min(l.loss), 1e-12))) for l in land2.values())
    hi = max(float(np.log10(np.max(l.loss))) for l in land2.values())
    levels = np.linspace(lo, hi, 25)
    for ax, (k, l) in zip(axes[1:], land2.items()):
        z = np.log10(np.maximum(l.loss, 1e-12)).T
        cs = ax.contourf(l.alphas, l.betas, z, levels=levels, cmap="viridis")
        ax.contour(l.alphas, l.betas, z, levels=levels[::3], colors="w", linewidths=0.4)
        ax.plot([0], [0], "r+", ms=10)
        ax.set_aspect("equal")
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax.set_title(f"2-D slice around {names[k]}: log10 training loss", fontsize=9)
    fig.colorbar(cs, ax=list(axes[1:]), shrink=0.85, label="log10 loss")
    fig.suptitle("Loss landscapes (Li et al. 2018 filter normalization) of small- and large-batch solutions",
                 fontsize=10)
    return fig


def interpolation_figure(lines: dict, cont_curve: np.ndarray, cfg):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, name in zip(axes[:2], ("sb_lb", "lb_lbsb")):
        a, b = LINE_NAMES[name].split(" -> ")
        tr, te = lines[name]["train"][0], lines[name]["test"][0]
        ax.plot(tr.alphas, tr.loss, "-o", ms=3, color="C0", label="train loss")
        ax.plot(te.alphas, te.loss, "-s", ms=3, color="C3", label="test loss")
        ax.set_yscale("log")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot(tr.alphas, 100 * tr.error, "--", color="C0", lw=1)
        ax2.plot(te.alphas, 100 * te.error, "--", color="C3", lw=1)
        ax2.set_ylabel("error (%), dashed")
        for x in (0.0, 1.0):
            ax.axvline(x, color="k", lw=0.6, ls=":")
        ax.set_xlabel(f"alpha   (0 = {a}, 1 = {b})")
        ax.set_title(f"{LINE_NAMES[name]}: train-loss barrier {tr.loss_barrier:.3g}", fontsize=9)
        ax.legend(fontsize=8, loc="upper center")
    ax = axes[2]
    ep = np.arange(cont_curve.shape[0])
    for r in range(cont_curve.shape[1]):
        ax.plot(ep, cont_curve[:, r], "-o", ms=3, label=f"seed {r}")
    ax.set_yscale("log")
    ax.set_xlabel(f"epochs of SB (batch {cfg.small_batch}) from the LB solution")
    ax.set_ylabel("training loss")
    ax.set_title("SGD's own path from LB: climbs, then falls", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("Loss along straight lines between small-batch (SB) and large-batch (LB) solutions "
                 "(Keskar et al. 2016 Fig. 3; Sagun et al. 2017)", fontsize=10)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="batch-size",
    description="Small vs large batch at the same training loss: sharpness, top Hessian eigenvalue, test error, "
                "lines between the solutions and filter-normalized landscapes.",
    paper="Keskar et al. 2016 (arXiv 1609.04836); Sagun et al. 2017 (arXiv 1706.04454)",
    config=BatchSizeConfig, presets=PRESETS, run=run))
