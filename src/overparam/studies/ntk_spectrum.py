"""NTK spectra of vanilla vs binary-weight networks, their generalization gaps, and the lazy regime.

Zhang, Yin & Wang ("Why quantization improves generalization: NTK of binary weight neural networks",
arXiv 2206.05916; chapter of K. Zhang's UCSB thesis, 2023) model stochastically rounded binary weights
as random variables, propagate their mean and variance through a smooth activation (a "quasi neural
network"), and find that the resulting NTK's eigenvalues decay about exponentially, like a Gaussian
kernel's, where a vanilla network's NTK decays polynomially like a Laplace kernel's; faster decay means a
smaller effective capacity, offered as the reason binary-weight nets generalize with a smaller gap.

Here: vanilla vs binary MLPs of the same shape and the same latent weights (BinaryLinear in "real" vs
"stochastic" mode, NTK parameterization), NTK (trace over outputs, float64) on the same points of
several datasets (inputs standardized and projected onto the sphere of radius sqrt(d), where the
NTK/Laplace correspondence holds), eigenvalues with power-law and exponential fits, Laplace and Gaussian
kernels (median-distance bandwidth) as references; generalization gaps of trained vanilla vs
BinaryConnect networks over seeds; and the relative change of the NTK during training vs width
(Jacot et al. 2018; Lee et al. 2019 bound it by O(width^-1/2); Dyer & Gur-Ari 2020 find O(1/width) for
smooth activations; ReLU nets measure in between).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.measure.ntk import (
    gaussian_kernel,
    kernel_regression,
    kernel_spectrum,
    laplace_kernel,
    ntk_gram,
    ntk_regression,
)
from overparam.models import mlp_parameter_count, seeded
from overparam.models.binary import QuasiNetwork, binary_mlp
from overparam.studies.base import (Check, DATASET_SHAPES, FLOAT32, FLOAT64, MAX_EPOCHS, MAX_EXAMPLES, MAX_STEPS,
                                    MAX_WIDTH, RunContext, Study, StudyResult, fmt, mlp_training_bytes, register)
from overparam.train import TrainConfig, train

ZYW = "Zhang, Yin & Wang, arXiv 2206.05916 (NTK of binary weight networks)"
LAPLACE = "Geifman et al. 2020; Chen & Xu 2021 (ReLU NTK ~ Laplace kernel on the sphere)"
LAZY = ("Jacot et al. 2018; Lee et al. 2019 (NeurIPS), Thm 2.1 and Fig. 1 (change O(width^-1/2)); "
        "Dyer & Gur-Ari 2020 (O(1/width) for smooth activations)")
KERNELS = ("vanilla", "binary", "laplace", "gaussian")


@dataclass
class NTKSpectrumConfig(StudyConfig):
    datasets: list[str] = param(["sphere", "mnist1d", "digits"], "datasets for the spectra",
                                choices=("sphere", "mnist1d", "digits"))
    n_points: int = param(1000, "points on which each kernel is evaluated", min=20, max=100_000)
    sphere_dim: int = param(2, "input dimension of the synthetic sphere dataset (2 = the circle: eigenvalue "
                                "index ~ 2 x frequency, so decay laws in the index are those in the frequency)", min=2,
                                max=10_000)
    width: int = param(1024, "hidden width of the MLPs whose NTK is compared", min=4, max=MAX_WIDTH)
    depth: int = param(1, "hidden layers", min=1, max=4)
    fit_first: int = param(2, "first eigenvalue index (1-based) of the decay fits", min=1, max=100_000)
    fit_last: int = param(100, "last eigenvalue index of the decay fits (stops earlier at the float64 floor)", min=5,
                          max=100_000)
    gap_dataset: str = param("digits", "dataset of the generalization-gap experiment",
                             choices=("sphere", "mnist1d", "digits"))
    gap_n_train: int = param(4000, "training examples for the gap experiment", min=20, max=MAX_EXAMPLES)
    gap_n_test: int = param(1000, "test examples for the gap experiment", min=20, max=MAX_EXAMPLES)
    gap_width: int = param(1024, "hidden width of the trained networks", min=4, max=MAX_WIDTH)
    gap_seeds: int = param(10, "seeds (networks per kind) in the gap experiment", min=1, max=1000)
    gap_epochs: int = param(100, "training epochs", min=1, max=MAX_EPOCHS)
    gap_lr: float = param(0.02, "Adam learning rate (latent weights in [-1, 1])", min=1e-6, max=10.0)
    gap_batch: int = param(100, "minibatch size", min=1, max=MAX_EXAMPLES)
    binary_mode: str = param("stochastic", "BinaryConnect rounding of the trained binary nets",
                             choices=("stochastic", "sign"))
    lazy_widths: list[int] = param([64, 128, 256, 512, 1024, 2048, 4096], "widths of the lazy-regime sweep", min=4,
                                   max=MAX_WIDTH)
    lazy_points: int = param(200, "training points of the lazy-regime sweep (sphere)", min=10, max=100_000)
    lazy_steps: int = param(1000, "full-batch GD steps (MSE) in the lazy-regime sweep", min=1, max=MAX_STEPS)
    kernel_points: int = param(1000, "train and test points of the kernel-regression comparison (kernel ridge)",
                               min=10, max=100_000)
    lazy_lr: float = param(1.0, "GD learning rate in the lazy-regime sweep (NTK parameterization)", min=1e-6, max=100.0)

    def validate(self) -> None:
        if self.fit_last - self.fit_first < 3:
            raise ConfigError("fit_last: must exceed fit_first by at least 3")
        if self.fit_last > self.n_points:
            raise ConfigError(f"fit_last: {self.fit_last} exceeds n_points={self.n_points}")
        if len(self.lazy_widths) < 2 or sorted(self.lazy_widths) != list(self.lazy_widths):
            raise ConfigError("lazy_widths: need at least 2 increasing widths, e.g. 64,256,1024")

    def peak_bytes(self) -> dict[str, float]:
        """Gram matrices and their eigenvectors (float64), the kernel-regression kernels, and the networks
        with their Jacobian blocks (at most the NTK's working memory)."""
        from overparam.measure.ntk import DEFAULT_MEMORY

        d = max(self.sphere_dim if name == "sphere" else DATASET_SHAPES[name][0]
                for name in [*self.datasets, self.gap_dataset])

        def net(width: int, points: int) -> float:
            P = mlp_parameter_count(d, [width] * self.depth, 10)
            return FLOAT64 * 4 * P + min(DEFAULT_MEMORY, FLOAT64 * points * P)
        return {"n_points": FLOAT64 * 3 * self.n_points ** 2, "kernel_points": FLOAT64 * 6 * self.kernel_points ** 2,
                "width": net(self.width, self.n_points),
                "gap_width": mlp_training_bytes(1, d, [self.gap_width] * self.depth, 10, self.gap_batch),
                "lazy_widths": net(max(self.lazy_widths), self.lazy_points),
                "gap_n_train": FLOAT32 * 3 * d * (self.gap_n_train + self.gap_n_test)}


PRESETS = {
    # The picture in ~40 s on 2 cores: 200 points, one hidden layer of 256, three seeds.
    "quick": {"n_points": 200, "width": 256, "fit_last": 60, "gap_n_train": 800, "gap_n_test": 1000,
              "gap_width": 256, "gap_seeds": 3, "gap_epochs": 30, "gap_lr": 0.02, "gap_batch": 100,
              "lazy_widths": [64, 256, 1024], "lazy_points": 100, "lazy_steps": 200, "kernel_points": 300},
    # The thesis' setting as far as it is stated: wide one-hidden-layer nets, sphere + real data,
    # 1000 points per spectrum, 10 seeds. (The paper publishes figures only, no tables.)
    "paper": {},
}


# ---------------------------------------------------------------------------------------------- data


def sphere_dataset(n_train: int, n_test: int, d: int, seed: int, n_classes: int = 10):
    """Points uniform on the sphere of radius sqrt(d), labelled by argmax of a random ReLU teacher."""
    g = torch.Generator().manual_seed(seed * 7919 + d)
    X = torch.randn(n_train + n_test, d, generator=g)
    X = X / X.norm(dim=1, keepdim=True) * d ** 0.5
    A = torch.randn(d, 64, generator=g) / d ** 0.5
    B = torch.randn(64, n_classes, generator=g)
    y = (torch.relu(X @ A) @ B).argmax(1)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:], n_classes


def _on_sphere(X_train, X_test):
    """Standardize with training statistics, then project every point onto the sphere of radius sqrt(d)."""
    mu, sd = X_train.mean(0), X_train.std(0) + 1e-6
    d = X_train.shape[1]

    def proj(X):
        Z = (X - mu) / sd
        return Z / Z.norm(dim=1, keepdim=True).clamp_min(1e-12) * d ** 0.5

    return proj(X_train), proj(X_test)


def load(name: str, n_train: int, n_test: int, cfg: NTKSpectrumConfig, ctx: RunContext):
    if name == "sphere":
        return sphere_dataset(n_train, n_test, cfg.sphere_dim, cfg.seed)
    if name == "digits":  # fixed 1257/540 split
        n_train, n_test = min(n_train, 1257), min(n_test, 540)
    ds = load_dataset(name, seed=cfg.seed, n_train=n_train, n_test=n_test, data_dir=ctx.data_dir)
    Xtr, Xte = _on_sphere(ds.X_train.flatten(1).float(), ds.X_test.flatten(1).float())
    return Xtr, ds.y_train, Xte, ds.y_test, ds.n_classes


# ---------------------------------------------------------------------------------------------- parts


def spectra(cfg: NTKSpectrumConfig, ctx: RunContext) -> dict:
    out = {}
    fit = (cfg.fit_first, cfg.fit_last)
    with ctx.progress.bar(len(cfg.datasets), "NTK spectra") as bar:
        for name in cfg.datasets:
            X, _, _, _, n_classes = load(name, cfg.n_points, 20, cfg, ctx)
            X = X[:cfg.n_points]
            d = X.shape[1]
            seed = cfg.seed * 1_000_003 + 17
            row = {}
            for kind, mode in (("vanilla", "real"), ("binary", "stochastic")):
                # same seed: the two nets share their latent weights and differ only in the binarization
                net = seeded(lambda: binary_mlp(d, [cfg.width] * cfg.depth, n_classes, mode=mode), seed=seed)
                res = ntk_gram(QuasiNetwork(net), X, dtype=torch.float64)
                row[kind] = kernel_spectrum(res.gram, fit=fit)
            row["laplace"] = kernel_spectrum(laplace_kernel(X), fit=fit)
            row["gaussian"] = kernel_spectrum(gaussian_kernel(X), fit=fit)
            out[name] = row
            bar.update(1)
    return out


def generalization_gaps(cfg: NTKSpectrumConfig, ctx: RunContext) -> dict:
    Xtr, ytr, Xte, yte, k = load(cfg.gap_dataset, cfg.gap_n_train, cfg.gap_n_test, cfg, ctx)
    d = Xtr.shape[1]
    res = {"vanilla": [], "binary": []}
    with ctx.progress.bar(2 * cfg.gap_seeds, "generalization gaps") as bar:
        for s in range(cfg.gap_seeds):
            seed = cfg.seed * 1000 + s
            for kind, mode in (("vanilla", "real"), ("binary", cfg.binary_mode)):
                net = seeded(lambda: binary_mlp(d, [cfg.gap_width] * cfg.depth, k, mode=mode,
                                                eval_weights="binary", seed=seed), seed=seed)
                tcfg = TrainConfig(optimizer="adam", lr=cfg.gap_lr, batch_size=cfg.gap_batch, epochs=cfg.gap_epochs,
                                   eval_every=10**12, seed=seed)
                hist = train(net, Xtr, ytr, tcfg, Xte, yte, k)
                f = hist.final()
                res[kind].append((1 - f["train_error"], 1 - f["test_error"]))
                bar.update(1)
    return {kind: np.array(v) for kind, v in res.items()}


def kernel_baselines(cfg: NTKSpectrumConfig, ctx: RunContext) -> dict:
    """Test error of kernel regression with the vanilla NTK, the binary (quasi) NTK, Laplace and Gaussian."""
    n = cfg.kernel_points
    Xtr, ytr, Xte, yte, k = load(cfg.gap_dataset, n, n, cfg, ctx)
    Xtr, ytr, Xte, yte = Xtr[:n], ytr[:n], Xte[:n], yte[:n]
    d = Xtr.shape[1]
    out = {}
    with ctx.progress.bar(4, "kernel regression") as bar:
        for kind, mode in (("vanilla", "real"), ("binary", "stochastic")):
            net = seeded(lambda: binary_mlp(d, [cfg.gap_width] * cfg.depth, k, mode=mode), seed=cfg.seed * 1000)
            out[kind] = ntk_regression(QuasiNetwork(net), Xtr, ytr, Xte, yte, n_classes=k, center=False).test_error
            bar.update(1)
        Y = torch.nn.functional.one_hot(ytr, k)
        both = torch.cat([Xtr, Xte])
        for kind, kern in (("laplace", laplace_kernel), ("gaussian", gaussian_kernel)):
            K = kern(both)  # bandwidth: median distance
            out[kind] = kernel_regression(K[:n, :n], K[n:, :n], Y, y_train=ytr, y_test=yte).test_error
            bar.update(1)
    return out


def lazy_sweep(cfg: NTKSpectrumConfig, ctx: RunContext) -> np.ndarray:
    Xtr, ytr, _, _, k = sphere_dataset(cfg.lazy_points, 1, cfg.sphere_dim, cfg.seed)
    d = Xtr.shape[1]
    change = []
    with ctx.progress.bar(len(cfg.lazy_widths), "lazy regime") as bar:
        for w in cfg.lazy_widths:
            net = seeded(lambda: binary_mlp(d, [w] * cfg.depth, k, mode="real"), seed=cfg.seed * 31 + w)
            k0 = ntk_gram(net, Xtr, dtype=torch.float64).gram
            tcfg = TrainConfig(optimizer="gd", lr=cfg.lazy_lr, steps=cfg.lazy_steps, loss="mse",
                               eval_every=10**12, seed=cfg.seed)
            hist = train(net, Xtr, ytr, tcfg, n_classes=k)
            if hist.diverged:
                change.append(np.nan)
            else:
                k1 = ntk_gram(net, Xtr, dtype=torch.float64).gram
                change.append(float(torch.linalg.norm(k1 - k0) / torch.linalg.norm(k0)))
            bar.update(1)
    return np.array(change)


# ---------------------------------------------------------------------------------------------- run


def run(cfg: NTKSpectrumConfig, ctx: RunContext) -> StudyResult:
    spec = spectra(cfg, ctx)
    gaps = generalization_gaps(cfg, ctx)
    kernels = kernel_baselines(cfg, ctx)
    lazy = lazy_sweep(cfg, ctx)
    return _summarize(cfg, spec, gaps, lazy, kernels)


def _summarize(cfg, spec, gaps, lazy, kernels=None) -> StudyResult:
    metrics, arrays, checks = {}, {}, []
    if kernels:
        metrics["kernel_regression_test_error"] = {k: float(v) for k, v in kernels.items()}
    idx = cfg.fit_last
    for name, row in spec.items():
        for kind, s in row.items():
            d = s.decay
            metrics[f"{name}_{kind}"] = {"power_exponent": d.power_exponent, "power_r2": d.power_r2,
                                         "exp_rate": d.exp_rate, "exp_r2": d.exp_r2, "better": d.better,
                                         f"lambda_{idx}_over_lambda_1": float(s.normalized()[idx - 1])}
            arrays[f"eigs_{name}_{kind}"] = s.eigenvalues
        v, b = row["vanilla"], row["binary"]
        faster = (b.normalized()[idx - 1] < v.normalized()[idx - 1]
                  and b.decay.power_exponent > v.decay.power_exponent and b.decay.exp_rate > v.decay.exp_rate)
        checks.append(Check(
            f"{name}: binary NTK spectrum decays faster than vanilla",
            f"binary λ_{idx}/λ_1 smaller, and larger fitted power exponent and exponential rate",
            f"λ_{idx}/λ_1 {fmt(b.normalized()[idx - 1])} vs {fmt(v.normalized()[idx - 1])}; exponent "
            f"{fmt(b.decay.power_exponent)} vs {fmt(v.decay.power_exponent)}; rate {fmt(b.decay.exp_rate)} vs "
            f"{fmt(v.decay.exp_rate)}", bool(faster), ZYW + ", eigenvalue-decay theorem and spectrum figure"))
    if "sphere" in spec:
        row = spec["sphere"]
        v, b, lap, gau = (row[k].decay for k in KERNELS)
        checks.append(Check(
            "sphere: decay laws -- vanilla power law (Laplace-like), binary exponential (Gaussian-like)",
            "vanilla: power-law R² > exponential R²; binary: exponential R² > power-law R²",
            f"vanilla R² power {fmt(v.power_r2)} / exp {fmt(v.exp_r2)}; binary R² power {fmt(b.power_r2)} / "
            f"exp {fmt(b.exp_r2)}", v.better == "power" and b.better == "exponential", ZYW + "; " + LAPLACE))
        ratio = v.power_exponent / lap.power_exponent
        checks.append(Check(
            "sphere: vanilla NTK decays like the Laplace kernel",
            "fitted power exponents of the vanilla NTK and the Laplace kernel within 25% of each other",
            f"a_vanilla {fmt(v.power_exponent)} vs a_Laplace {fmt(lap.power_exponent)} (ratio {fmt(ratio)}); "
            f"Gaussian kernel (median bandwidth): a {fmt(gau.power_exponent)}, rate {fmt(gau.exp_rate)}",
            0.75 <= ratio <= 1.25, LAPLACE))
    gap = {k: v[:, 0] - v[:, 1] for k, v in gaps.items()}
    for kind, acc in gaps.items():
        arrays[f"gap_{kind}_train_acc"], arrays[f"gap_{kind}_test_acc"] = acc[:, 0], acc[:, 1]
        metrics[f"gap_{kind}"] = {"mean_gap": float(gap[kind].mean()), "std_gap": float(gap[kind].std()),
                                  "train_acc": float(acc[:, 0].mean()), "test_acc": float(acc[:, 1].mean())}
    gv, gb = float(gap["vanilla"].mean()), float(gap["binary"].mean())
    checks.append(Check(
        f"{cfg.gap_dataset}: binary nets have the smaller generalization gap",
        "mean (train − test accuracy) over seeds: binary < vanilla",
        f"binary {fmt(100 * gb)} ± {fmt(100 * gap['binary'].std())} pts vs vanilla {fmt(100 * gv)} ± "
        f"{fmt(100 * gap['vanilla'].std())} pts ({cfg.gap_seeds} seeds, {cfg.binary_mode} BinaryConnect; train acc "
        f"binary {fmt(100 * gaps['binary'][:, 0].mean())}%, vanilla {fmt(100 * gaps['vanilla'][:, 0].mean())}%)",
        gb < gv, ZYW + ", experiments on generalization gap"))
    widths = np.array(cfg.lazy_widths, dtype=float)
    ok = np.isfinite(lazy) & (lazy > 0)
    slope = float(np.polyfit(np.log(widths[ok]), np.log(lazy[ok]), 1)[0]) if ok.sum() >= 2 else float("nan")
    shrinks = bool(ok.all() and lazy[-1] < lazy[0])
    checks.append(Check(
        "lazy regime: relative NTK change shrinks with width",
        "‖Θ_T − Θ_0‖/‖Θ_0‖ smaller at the widest net; log-log slope in [−1.1, −0.4]: "
        "at least the O(width^−1/2) "
        "of Lee et al.'s bound, at most the O(1/width) of smooth nets",
        "change " + ", ".join(f"{fmt(c)}@{int(w)}" for w, c in zip(widths, lazy)) + f"; slope {fmt(slope)}",
        shrinks and -1.1 <= slope <= -0.4, LAZY))
    arrays["lazy_widths"], arrays["lazy_relative_change"] = widths, lazy
    metrics["lazy_slope"] = slope
    metrics["lazy_relative_change"] = lazy.tolist()
    n_pass = sum(c.passed for c in checks)
    notes = (f"Binary (quasi-network) NTK vs vanilla on {', '.join(spec)}: "
             + "; ".join(f"{n} λ_{idx}/λ_1 {fmt(r['binary'].normalized()[idx - 1])} vs "
                         f"{fmt(r['vanilla'].normalized()[idx - 1])}" for n, r in spec.items())
             + f". Generalization gap binary {fmt(100 * gb)} vs vanilla {fmt(100 * gv)} points. "
             + ("Kernel regression test error (" + cfg.gap_dataset + "): "
                + ", ".join(f"{k} {fmt(100 * v)}%" for k, v in kernels.items()) + ". " if kernels else "")
             + f"Lazy-regime slope {fmt(slope)}. {n_pass}/{len(checks)} checks agree with the papers.")
    figures = {"ntk_spectra": _spectra_figure(cfg, spec), "generalization_gap": _gap_figure(cfg, gaps),
               "lazy_regime": _lazy_figure(widths, lazy, slope)}
    return StudyResult(metrics, checks, arrays, figures, notes=notes)


def _spectra_figure(cfg, spec):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spec), figsize=(4.6 * len(spec), 3.8), squeeze=False)
    styles = {"vanilla": ("C0", "-"), "binary": ("C3", "-"), "laplace": ("gray", "--"), "gaussian": ("k", ":")}
    for ax, (name, row) in zip(axes[0], spec.items()):
        for kind, s in row.items():
            lam = s.normalized()
            i = np.arange(1, lam.size + 1)
            keep = lam > 1e-14
            d = s.decay
            color, ls = styles[kind]
            ax.loglog(i[keep], lam[keep], ls, color=color, lw=1.5,
                      label=f"{kind} (a={d.power_exponent:.2f}, b={d.exp_rate:.3f}, {d.better})")
        ax.axvspan(cfg.fit_first, cfg.fit_last, color="y", alpha=0.08)
        ax.set_title(f"{name}: NTK vs kernel spectra (N={cfg.n_points})")
        ax.set_xlabel("index i")
        ax.set_ylabel("λ_i / λ_1")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _gap_figure(cfg, gaps):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for j, (kind, acc) in enumerate(gaps.items()):
        gap = 100 * (acc[:, 0] - acc[:, 1])
        ax.bar(j, gap.mean(), yerr=gap.std(), color=("C0", "C3")[j], alpha=0.7, capsize=4)
        ax.plot(np.full(len(gap), j), gap, "k.", ms=5)
    ax.set_xticks([0, 1], ["vanilla", f"binary ({cfg.binary_mode})"])
    ax.set_ylabel("train − test accuracy (points)")
    ax.set_title(f"Generalization gap, {cfg.gap_dataset}, {cfg.gap_seeds} seeds")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def _lazy_figure(widths, lazy, slope):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.loglog(widths, lazy, "o-", color="C2", label=f"measured (slope {slope:.2f})")
    if np.isfinite(lazy[0]):
        ax.loglog(widths, lazy[0] * (widths / widths[0]) ** -0.5, "k:", label="∝ width^(-1/2)")
    ax.set_xlabel("width")
    ax.set_ylabel("‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F")
    ax.set_title("Lazy regime: NTK change during training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="ntk-spectrum",
    description="NTK eigenvalue decay of vanilla vs binary-weight MLPs, generalization gaps, and the lazy regime.",
    paper="Zhang, Yin & Wang (arXiv 2206.05916); Jacot et al. 2018; Lee et al. 2019",
    config=NTKSpectrumConfig, presets=PRESETS, run=run))
