"""Which complexity measure predicts generalization? (Jiang et al. 2019, "Fantastic generalization measures and
where to find them", arXiv 1912.02178.)

Jiang et al. trained ~10,000 convolutional networks varying width, depth, batch size, learning rate, dropout,
weight decay and optimizer, all to the same training cross-entropy, and ranked 40+ measures by the Kendall tau
between each measure and the generalization gap, overall and "granulated" (per hyperparameter, among models
that differ in that hyperparameter only, then averaged). Their finding: the sharpness-based measures --
PAC-Bayes flatness, magnitude-aware perturbation bounds -- predict best; norm- and margin-based measures are
unreliable (spectral-norm products even correlate negatively).

Here: a population of MLPs varying width, depth, batch size, learning rate, weight decay and training-label
noise (a full factorial, or a half fraction of the non-width factors crossed with every width), each trained
with plain SGD until its training error (or loss) reaches a common target; models that do not get there are
left out, as in the paper. Every model is measured with ``overparam.measure.generalization_measures`` (norms,
margins, path norm, PAC-Bayes sigmas) plus Keskar sharpness and the top Hessian eigenvalue from
``overparam.measure.sharpness``. Networks of one depth and one optimizer setting train together as one vmap
ensemble, the widths zero-padded to the widest with gradient masks (``overparam.train.widths``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import corrupt, load_dataset
from overparam.measure import generalization_measures, sharpness
from overparam.models import MLP, mlp_parameter_count, seeded
from overparam.studies.base import (Check, DATASET_SHAPES, FLOAT32, MAX_EXAMPLES, MAX_STEPS, MAX_WIDTH, RunContext,
                                    Study, StudyResult, check_data_keys, data_bytes, fmt, mlp_training_bytes, register)
from overparam.train import Ensemble, TrainConfig, evaluate, loss_function
from overparam.train.target import train_to_target
from overparam.train.widths import pad_mlp, unpad_mlp

JIANG = "Jiang et al. 2019 (arXiv 1912.02178)"
FACTORS = ("width", "depth", "batch_size", "lr", "weight_decay", "label_noise")

# Families as Jiang et al. group them (sec. 6-8): norm-based (incl. distances to initialization), margin-normalized
# norm bounds, and sharpness-based (PAC-Bayes flatness and bounds; Keskar sharpness and the top Hessian eigenvalue
# added here). Larger = more complex = larger expected gap for every one of them (the raw margin is left out; its
# complexity version is inverse_margin).
FAMILIES = {
    "baseline": ("n_params",),
    "norm": ("l2", "param_norm", "log_prod_of_fro", "log_sum_of_fro", "log_prod_of_spec", "log_sum_of_spec",
             "fro_over_spec", "log_spec_orig_main", "path_norm", "fro_dist", "dist_spec_init", "l2_dist"),
    "margin": ("inverse_margin", "log_prod_of_fro_over_margin", "log_sum_of_fro_over_margin",
               "log_prod_of_spec_over_margin", "log_sum_of_spec_over_margin", "path_norm_over_margin"),
    "sharpness": ("pacbayes_flatness", "pacbayes_mag_flatness", "pacbayes_orig", "pacbayes_mag_orig",
                  "pacbayes_init", "pacbayes_mag_init", "keskar_sharpness", "hessian_top"),
}
FAMILY_OF = {m: f for f, ms in FAMILIES.items() for m in ms}
NORM_BASED = ("norm", "margin")
# The spectral-norm measures (Bartlett et al. 2017-style products and their margin-normalized forms) are the ones
# Jiang et al. single out: they correlate negatively with the gap in their population.
SPECTRAL = ("log_prod_of_spec", "log_sum_of_spec", "log_spec_orig_main", "log_prod_of_spec_over_margin",
            "log_sum_of_spec_over_margin")


@dataclass
class GeneralizationMeasuresConfig(StudyConfig):
    dataset: str = param("digits", "training data", choices=("digits", "mnist1d", "mnist"))
    data_dir: str = param("", "folder of MNIST IDX files (dataset=mnist)")
    n_train: int = param(1257, "training examples", min=50, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test examples (none: the dataset's default)", min=10, max=MAX_EXAMPLES)
    widths: list[int] = param([32, 128], "hidden widths", min=1, max=MAX_WIDTH)
    depths: list[int] = param([1, 2], "numbers of hidden layers", min=1, max=6)
    batch_sizes: list[int] = param([32, 128], "SGD batch sizes", min=1, max=MAX_EXAMPLES)
    lrs: list[float] = param([0.05, 0.2], "SGD learning rates", min=1e-6, max=10.0)
    weight_decays: list[float] = param([0.0, 5e-4], "weight decays", min=0.0, max=1.0)
    label_noises: list[float] = param([0.0, 0.1], "fractions of training labels replaced by another label",
                                      min=0.0, max=0.9)
    design: str = param("full", "full factorial, or half: a 2^(5-1) fraction of depth x batch x lr x wd x noise "
                                "(two values each; every combination of four fixes the fifth) crossed with all "
                                "widths", choices=("full", "half"))
    seeds: int = param(1, "initializations per configuration (same ensemble)", min=1, max=16)
    criterion: str = param("train_error", "what must reach the target", choices=("train_error", "train_loss"))
    target: float = param(0.01, "stop each model at the first check where the criterion is <= this "
                                "(Jiang et al.: cross-entropy 0.01)", min=0.0, max=10.0)
    max_steps: int = param(20_000, "step cap; models not at the target by then are left out", min=1, max=MAX_STEPS)
    chunk_steps: int = param(100, "check the criterion every this many steps (rounded up to whole epochs)", min=1,
                             max=MAX_STEPS)
    pacbayes_samples: int = param(10, "Monte Carlo samples per PAC-Bayes sigma", min=1, max=10_000)
    pacbayes_bisect: int = param(20, "bisection steps per PAC-Bayes sigma", min=1, max=1000)
    sharpness_iters: int = param(20, "L-BFGS-B iterations of Keskar's sharpness (eps 1e-3)", min=1, max=100_000)
    min_tau_gap: float = param(0.0, "the best sharpness-based tau must beat the best norm-based by more than this",
                               min=0.0, max=2.0)

    def validate(self) -> None:
        for key in ("widths", "depths", "batch_sizes", "lrs", "weight_decays", "label_noises"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"{key}: need at least one value, without repeats")
            if self.design == "half" and key != "widths" and len(values) != 2:
                raise ConfigError(f"{key}: design=half needs exactly two values per factor")
        check_data_keys(self.dataset, self.data_dir, self.n_train, n_test=self.n_test)

    def peak_bytes(self) -> dict[str, float]:
        """One padded ensemble (every width of a group) in training, and every trained model and its
        initialization kept for the measurements."""
        d, k, _, _ = DATASET_SHAPES[self.dataset]
        points = design_points(self)
        kept = sum(mlp_parameter_count(d, [p["width"]] * p["depth"], k) for p in points) * self.seeds * 2 * FLOAT32
        training = max(mlp_training_bytes(len(self.widths) * self.seeds, d, [max(self.widths)] * p["depth"], k,
                                          p["batch_size"]) for p in points)
        return {**data_bytes(self.dataset, self.n_train, self.n_test, copies=len(self.label_noises) + 1),
                "widths": kept + training}


PRESETS = {
    # digits, 500 examples; 2 widths x a half fraction (16) of the other five factors = 32 models, trained to
    # 99% training accuracy; ~30 s on one core.
    "quick": {"n_train": 500, "n_test": 500, "design": "half", "widths": [16, 64], "lrs": [0.1, 0.3],
              "batch_sizes": [32, 128], "label_noises": [0.0, 0.1], "chunk_steps": 100, "max_steps": 4000,
              "pacbayes_samples": 5, "pacbayes_bisect": 12, "sharpness_iters": 10},
    # Jiang et al.'s protocol scaled to MLPs: 3 values of every factor (729 configurations), 2 seeds, trained to
    # cross-entropy 0.01.
    "paper": {"n_train": 1257, "widths": [64, 256, 1024], "depths": [1, 2, 3], "batch_sizes": [32, 128, 512],
              "lrs": [0.01, 0.05, 0.2], "weight_decays": [0.0, 1e-4, 5e-4], "label_noises": [0.0, 0.1, 0.2],
              "design": "full", "seeds": 2, "criterion": "train_loss", "target": 0.01, "max_steps": 100_000},
}


def design_points(cfg) -> list[dict]:
    """The configurations: each a dict over FACTORS."""
    others = [cfg.depths, cfg.batch_sizes, cfg.lrs, cfg.weight_decays, cfg.label_noises]
    if cfg.design == "full":
        combos = list(itertools.product(*others))
    else:  # 2^(5-1) with the defining relation I = ABCDE: the product of the +-1 codes is +1
        combos = [tuple(v[(1 + s) // 2] for v, s in zip(others, signs))
                  for signs in itertools.product((-1, 1), repeat=5) if np.prod(signs) == 1]
    return [dict(zip(FACTORS, (w,) + c)) for c in combos for w in cfg.widths]


# ----------------------------------------------------------------------------------------------------- run
def run(cfg: GeneralizationMeasuresConfig, ctx: RunContext) -> StudyResult:
    torch.set_num_threads(1)
    base = load_dataset(cfg.dataset, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                        data_dir=(cfg.data_dir or ctx.data_dir) if cfg.dataset == "mnist" else None)
    C, d_in = base.n_classes, base.input_dim
    data = {p: (corrupt(base, "label_noise", p=p, seed=cfg.seed) if p > 0 else base) for p in cfg.label_noises}
    points = design_points(cfg)
    groups: dict[tuple, list[int]] = {}
    for i, pt in enumerate(points):
        groups.setdefault(tuple(pt[f] for f in FACTORS[1:]), []).append(i)
    rows = []                        # one per model: factors, seed, reached, steps, errors, measures
    t0 = time.process_time()
    lf = loss_function("cross_entropy", C)
    with ctx.progress.bar(len(groups), "generalization-measures: training") as bar:
        for gi, (key, idx) in enumerate(groups.items()):
            depth, batch, lr, wd, noise = key
            ds = data[noise]
            H = max(points[i]["width"] for i in idx)
            members, models, masks = [], [], []
            for i in idx:
                for s in range(cfg.seeds):
                    seed = (cfg.seed * 1_000_003 + 7919 * gi + 31 * points[i]["width"]) * 17 + s
                    narrow = seeded(lambda: MLP(d_in, [points[i]["width"]] * depth, C), seed)
                    padded, mask = pad_mlp(narrow, H)
                    members.append((i, s, narrow))
                    models.append(padded)
                    masks.append(mask)
            ens = Ensemble(models, torch.float32, {k: torch.stack([m[k] for m in masks]) for k in masks[0]})
            tcfg = TrainConfig(optimizer="sgd", lr=lr, batch_size=batch, weight_decay=wd, seed=cfg.seed + gi)

            def unpack(e, r, members=members):
                state = {k: v[r].detach().clone() for k, v in {**e.params, **e.buffers}.items()}
                return unpad_mlp(state, members[r][2])

            fit = train_to_target(ens, ds.X_train, ds.y_train, tcfg, C, cfg.target, cfg.max_steps, cfg.chunk_steps,
                                  metric=cfg.criterion, data_seeds=[cfg.seed * 13 + gi * 101 + r
                                                                    for r in range(len(members))],
                                  unpack=unpack, desc=f"group {gi}")
            for r, (i, s, narrow) in enumerate(members):
                rows.append({"point": i, **points[i], "seed": s, "reached": bool(fit.reached[r]),
                             "steps": int(fit.steps[r]), "model": fit.models[r], "init": narrow})
            bar.update(1)
    t1 = time.process_time()
    with ctx.progress.bar(len(rows), "generalization-measures: measuring") as bar:
        for row in rows:
            ds = data[row["label_noise"]]
            m = row.pop("model").eval()
            init = row.pop("init")
            train_loss, train_err = evaluate(m, ds.X_train, ds.y_train, lf)
            test_loss, test_err = evaluate(m, ds.X_test, ds.y_test, lf)
            gm = generalization_measures(m, (ds.X_train, ds.y_train), init_model=init, num_threads=1,
                                         pacbayes_kw={"n_samples": cfg.pacbayes_samples,
                                                      "n_bisect": cfg.pacbayes_bisect, "seed": cfg.seed})
            sh = sharpness(m, "cross_entropy", (ds.X_train, ds.y_train), eps=1e-3, maxiter=cfg.sharpness_iters,
                           seed=cfg.seed, pacbayes=False, num_threads=1)
            row.update(train_error=train_err, test_error=test_err, train_loss=train_loss, test_loss=test_loss,
                       gap=test_err - train_err,
                       measures={**gm.measures, "keskar_sharpness": sh.sharpness, "hessian_top": sh.top_eigenvalue})
            bar.update(1)
    result = summarize(cfg, rows)
    result.metrics["cpu_seconds"] = {"training": t1 - t0, "measuring": time.process_time() - t1}
    result.metrics["steps"] = [r["steps"] for r in rows]
    return result


# --------------------------------------------------------------------------------------------- statistics
def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b over the pairs where both are finite; nan with fewer than 3 such pairs or a constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(kendalltau(x[ok], y[ok]).statistic)


def granulated_tau(factors: list[dict], x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Jiang et al.'s psi_i: for each factor i, the mean over groups of models equal in every other factor
    (and seed) of the Kendall tau inside the group (a pair gives +-1); nan if the design has no such group."""
    out = {}
    for f in FACTORS:
        groups: dict[tuple, list[int]] = {}
        for j, row in enumerate(factors):
            groups.setdefault(tuple(row[g] for g in FACTORS + ("seed",) if g != f), []).append(j)
        taus = []
        for idx in groups.values():
            if len({factors[j][f] for j in idx}) < 2:
                continue
            xs, ys = x[idx], y[idx]
            ok = np.isfinite(xs) & np.isfinite(ys)
            if ok.sum() < 2:
                continue
            xs, ys = xs[ok], ys[ok]
            if len(xs) == 2:
                taus.append(float(np.sign(xs[1] - xs[0]) * np.sign(ys[1] - ys[0])))
            elif np.ptp(xs) > 0 and np.ptp(ys) > 0:
                taus.append(float(kendalltau(xs, ys).statistic))
        out[f] = float(np.mean(taus)) if taus else float("nan")
    return out


def summarize(cfg, rows: list[dict]) -> StudyResult:
    """Rank the measures by Kendall tau against the gap over the models that reached the target. ``rows``: one
    dict per model with the FACTORS, "seed", "reached", "gap", "train_error", "test_error", "measures". Pure:
    the tests drive it with synthetic populations."""
    used = [r for r in rows if r["reached"]]
    gap = np.array([r["gap"] for r in used], dtype=float)
    names = [m for f in FAMILIES.values() for m in f if any(m in r["measures"] for r in used)]
    values = {m: np.array([r["measures"].get(m, np.nan) for r in used], dtype=float) for m in names}
    tau = {m: kendall(values[m], gap) for m in names}
    gran = {m: granulated_tau(used, values[m], gap) for m in names}
    ranked = sorted((m for m in names if np.isfinite(tau[m])), key=lambda m: -tau[m])
    best = {f: max((tau[m] for m in ranked if FAMILY_OF[m] == f), default=float("nan")) for f in FAMILIES}
    best_name = {f: next((m for m in ranked if FAMILY_OF[m] == f), None) for f in FAMILIES}
    best_norm = max((best[f] for f in NORM_BASED if np.isfinite(best[f])), default=float("nan"))
    norm_name = max((best_name[f] for f in NORM_BASED if best_name[f]), key=lambda m: tau[m], default=None)
    spec = {m: tau[m] for m in SPECTRAL if m in tau and np.isfinite(tau[m])}
    n_neg = sum(t < 0 for t in spec.values())
    lowest = min(spec, key=spec.get) if spec else None
    top = ranked[0] if ranked else None
    enough = len(used) >= 8
    mag = tau.get("pacbayes_mag_flatness", float("nan"))
    checks = [
        Check("sharpness-based measures predict the gap better than norm-based ones",
              f"best tau of a sharpness-based measure > best norm/margin-based tau + {cfg.min_tau_gap:g} "
              f"(over >= 8 models at the target)",
              f"{best_name['sharpness']} {fmt(best['sharpness'])} vs {norm_name} {fmt(best_norm)} "
              f"({len(used)}/{len(rows)} models at the target); top overall: {top} ({FAMILY_OF.get(top, '-')})",
              bool(enough and np.isfinite(best["sharpness"]) and
                   (not np.isfinite(best_norm) or best["sharpness"] > best_norm + cfg.min_tau_gap)),
              JIANG + ", sec. 7-8 and Table 5 (PAC-Bayes flatness and magnitude-aware bounds among the best)"),
        Check("magnitude-aware PAC-Bayes flatness correlates positively with the gap",
              "tau(pacbayes_mag_flatness, gap) > 0",
              f"tau {fmt(mag)}", bool(enough and np.isfinite(mag) and mag > 0),
              JIANG + ", Table 5 (pacbayes.mag.flatness)"),
        Check("spectral-norm measures are unreliable",
              "at least one spectral-norm measure (" + ", ".join(SPECTRAL) + ") has tau < 0",
              f"{n_neg}/{len(spec)} with tau < 0; lowest "
              + (f"{lowest} {spec[lowest]:.3f}" if lowest else "nan"),
              bool(enough and n_neg >= 1),
              JIANG + ", sec. 7-8 (spectral-norm based measures correlate negatively with the gap)"),
    ]
    avail = [f for f in FACTORS if any(np.isfinite(gran[m][f]) for m in names)]
    metrics = {
        "n_models": len(rows), "n_at_target": len(used),
        "tau": {m: tau[m] for m in names},
        "ranking": [[m, FAMILY_OF[m], tau[m]] for m in ranked],
        "best_by_family": {f: [best_name[f], best[f]] for f in FAMILIES},
        "granulated_tau": {m: {f: gran[m][f] for f in avail} for m in names},
        "granulated_factors": avail,
        "granulated_mean": {m: float(np.nanmean([gran[m][f] for f in avail])) if avail else float("nan")
                            for m in names},
        "gap_mean": float(gap.mean()) if len(gap) else float("nan"),
        "gap_range": [float(gap.min()), float(gap.max())] if len(gap) else None,
    }
    arrays = {
        "factors": np.array([[r[f] for f in FACTORS] for r in rows], dtype=float),
        "reached": np.array([r["reached"] for r in rows]),
        "gap": np.array([r.get("gap", np.nan) for r in rows], dtype=float),
        "measure_names": np.array(names),
        "measures": np.array([[r.get("measures", {}).get(m, np.nan) for m in names] for r in rows], dtype=float),
    }
    notes = (f"{len(used)} of {len(rows)} models reached the target; generalization gaps "
             + (f"{100 * gap.min():.1f}-{100 * gap.max():.1f} points. " if len(gap) else ". ")
             + (f"Best measure: {top} (tau {tau[top]:.2f}, {FAMILY_OF[top]}); best sharpness-based "
                f"{best_name['sharpness']} ({best['sharpness']:.2f}); best norm/margin-based {norm_name} "
                f"({best_norm:.2f})." if top else "No measure could be ranked."))
    figures = {"generalization_measures": figure(names, tau, gran, avail)} if ranked else {}
    return StudyResult(metrics, checks, arrays, figures, notes=notes)


def figure(names, tau, gran, factors):
    import matplotlib.pyplot as plt

    colors = {"baseline": "0.5", "norm": "C0", "margin": "C2", "sharpness": "C3"}
    order = sorted((m for m in names if np.isfinite(tau[m])), key=lambda m: tau[m])
    ncol = 2 if factors else 1
    fig, axes = plt.subplots(1, ncol, figsize=(7 + 4 * (ncol - 1), 0.28 * len(order) + 1.5), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2] if ncol == 2 else [1]})
    ax = axes[0, 0]
    ax.barh(range(len(order)), [tau[m] for m in order], color=[colors[FAMILY_OF[m]] for m in order])
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("Kendall tau with the generalization gap")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=f) for f, c in colors.items()], fontsize=7, loc="lower right")
    ax.set_title("Measures ranked (Jiang et al. 2019)", fontsize=9)
    if factors:
        ax = axes[0, 1]
        M = np.array([[gran[m][f] for f in factors] for m in order])
        im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")  # rows as in the bars
        ax.set_xticks(range(len(factors)), factors, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.set_title("granulated tau per varied hyperparameter", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="generalization-measures",
    description="A population of MLPs varying six hyperparameters: Kendall tau of norm, margin and sharpness "
                "measures against the generalization gap.",
    paper=JIANG,
    config=GeneralizationMeasuresConfig, presets=PRESETS, run=run))
