"""Double descent of random-feature regression (Belkin, Hsu, Ma, Mandal 2019, PNAS).

A linear model on N random features of the input -- ReLU features max(0, w.x + b) (the "extreme
learning machine" view: a two-layer net whose first layer is frozen at its random init) or random
Fourier features cos(w.x + b) with w ~ N(0, sigma^-2 I) -- is fit to one-hot targets by least
squares on n training points. Past N = n the system has many solutions and we take the minimum-norm
one (ridge with lambda -> 0). The test risk peaks at N = n, where the feature matrix is square and
its smallest singular value goes to zero, and so does the norm of the solution; beyond it both
fall again. Ridge regularization (lambda > 0) bounds the norm and removes the peak.

Everything is closed form in float64: one eigendecomposition of the smaller Gram matrix gives the
solution for every lambda, w_lambda = (Phi^T Phi + n lambda I)^-1 Phi^T Y, and lambda = 0 is the
pseudo-inverse (minimum-norm) solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from overparam.config import ConfigError, StudyConfig, param
from overparam.data import load_dataset
from overparam.studies.base import (Check, DATASET_SHAPES, FLOAT64, MAX_EXAMPLES, RunContext, Study, StudyResult,
                                    check_data_keys, fmt, register)

BELKIN = "Belkin, Hsu, Ma, Mandal 2019 (PNAS), Fig. 2 (RFF on MNIST) and Fig. 3"
FEATURES = ("relu", "fourier")


@dataclass
class RandomFeaturesConfig(StudyConfig):
    datasets: list[str] = param(["mnist1d", "digits"], "datasets (mnist1d, digits, mnist)")
    data_dir: str = param("", "folder of MNIST IDX files (dataset mnist)")
    n_train: int = param(400, "training points n (digits has at most 1257)", min=10, max=MAX_EXAMPLES)
    n_test: int | None = param(None, "test points (none: the dataset's default, 1000 for mnist1d, 540 for digits)",
                               min=10, max=MAX_EXAMPLES)
    features: list[str] = param(["relu", "fourier"], "random feature maps: relu, fourier")
    ratios: list[float] = param([0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0],
                                "numbers of features as multiples N/n of the training-set size; must contain 1",
                                min=0.001, max=1000.0)
    ridges: list[float] = param([0.0, 1e-5, 1e-3], "ridge strengths lambda (0 = minimum-norm least squares); "
                                "objective (1/n)|Phi w - Y|^2 + lambda |w|^2", min=0.0, max=1e6)
    bandwidth: float = param(0.0, "Fourier bandwidth sigma on standardized inputs; 0 = half the median pairwise "
                             "distance (Belkin's sigma=5 on MNIST is about half its median distance)", min=0.0, max=1e6)
    feature_seeds: int = param(3, "independent draws of the random features (curves are averaged)", min=1, max=100)
    margin: float = param(0.05, "relative margin by which the largest-lambda risk at N=n may exceed its neighbours",
                          min=0.0, max=1.0)

    def validate(self) -> None:
        for name in self.datasets:
            if name not in ("mnist1d", "digits", "mnist"):
                raise ConfigError(f"datasets: {name!r} is not allowed; choose from mnist1d, digits, mnist")
        check_data_keys(self.datasets, self.data_dir, self.n_train, n_test=self.n_test)
        for name in self.features:
            if name not in FEATURES:
                raise ConfigError(f"features: {name!r} is not allowed; choose from relu, fourier")
        if not self.features:
            raise ConfigError("features: give at least one feature map")
        r = list(self.ratios)
        if sorted(r) != r or len(set(r)) != len(r):
            raise ConfigError("ratios: must be strictly increasing, e.g. 0.5,1,2")
        if 1.0 not in r or r[0] == 1.0 or r[-1] == 1.0:
            raise ConfigError("ratios: must contain 1 (N = n) with at least one ratio on each side")
        if sorted(self.ridges) != list(self.ridges) or len(set(self.ridges)) != len(self.ridges):
            raise ConfigError("ridges: must be strictly increasing, e.g. 0,1e-3,1e-1")
        if len(self.ridges) < 2:
            raise ConfigError("ridges: need lambda = 0 and at least one lambda > 0")
        if self.ridges[0] != 0.0:
            raise ConfigError("ridges: the first lambda must be 0 (the minimum-norm solution)")

    def peak_bytes(self) -> dict[str, float]:
        """One dataset at a time: its standardized inputs, the train and test features (float64) and the
        smaller Gram matrix with its eigenvectors."""
        n, N = self.n_train, max(1, round(max(self.ratios) * self.n_train))
        features = data = 0.0
        for name in self.datasets:
            d, _, _, default_test = DATASET_SHAPES.get(name, DATASET_SHAPES["mnist"])
            n_test = self.n_test or default_test
            features = max(features, FLOAT64 * (N * (2 * n + n_test) + 3 * min(n, N) ** 2))
            data = max(data, FLOAT64 * 2 * d * (n + n_test))
        return {"n_train": data, "n_train or ratios": features}


PRESETS = {
    # n=300, N/n up to 10, three feature draws, both datasets and both feature maps.
    "quick": {"n_train": 300},
    # Closer to Belkin's scale: n=1000 (digits' 1257 images bound it), a denser grid, more draws.
    "paper": {"n_train": 1000,
              "ratios": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2,
                         1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0, 20.0],
              "ridges": [0.0, 1e-6, 1e-5, 1e-4, 1e-3], "feature_seeds": 10},
}


# ---------------------------------------------------------------- closed-form solvers (tested against pinv)

def ridge_solutions(Phi: torch.Tensor, Y: torch.Tensor, ridges: list[float], rcond: float | None = None):
    """Solutions of min (1/n)|Phi w - Y|^2 + lambda |w|^2 for every lambda, from one eigendecomposition.

    lambda = 0 gives the minimum-norm least-squares solution pinv(Phi) Y. The smaller Gram matrix is
    diagonalized: Phi^T Phi (N x N) when N <= n, else Phi Phi^T (n x n) with w = Phi^T alpha (the
    kernel form) -- on this CPU that is ~40x faster than an SVD of a wide Phi and agrees with pinv to
    float64 precision on the grids used here (test_dd_family). Eigenvalues below rcond * max are
    treated as zero, i.e. singular values below sqrt(rcond) * s_max. Returns a list of (N, k) tensors.
    """
    n, N = Phi.shape
    primal = N <= n
    G = Phi.T @ Phi if primal else Phi @ Phi.T
    e, Q = torch.linalg.eigh(G)
    if rcond is None:
        rcond = max(n, N) * torch.finfo(Phi.dtype).eps
    keep = e > rcond * e.max()
    QtB = Q.T @ (Phi.T @ Y if primal else Y)
    out = []
    for lam in ridges:
        if lam == 0:
            scale = torch.where(keep, 1.0 / torch.where(keep, e, torch.ones_like(e)), torch.zeros_like(e))
        else:
            scale = 1.0 / (e.clamp_min(0) + n * lam)
        coef = Q @ (scale[:, None] * QtB)
        out.append(coef if primal else Phi.T @ coef)
    return out


def ridge_normal_equations(Phi: torch.Tensor, Y: torch.Tensor, lam: float) -> torch.Tensor:
    """(Phi^T Phi + n lambda I)^-1 Phi^T Y: the textbook form, for testing ridge_solutions."""
    n, N = Phi.shape
    return torch.linalg.solve(Phi.T @ Phi + n * lam * torch.eye(N, dtype=Phi.dtype), Phi.T @ Y)


# ---------------------------------------------------------------- features

def _standardize(X_train: torch.Tensor, X_test: torch.Tensor):
    mu, sd = X_train.mean(0), X_train.std(0)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))  # constant pixels (digits' borders) stay 0
    return (X_train - mu) / sd, (X_test - mu) / sd


def median_distance(X: torch.Tensor, max_points: int = 1000) -> float:
    Z = X[:max_points]
    d = torch.cdist(Z, Z)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median())


def random_features(kind: str, X: torch.Tensor, n_features: int, seed: int, bandwidth: float) -> torch.Tensor:
    """N random features of X (float64), scaled by 1/sqrt(N) so that Phi Phi^T tends to a fixed kernel
    (the arc-cosine kernel for ReLU, the Gaussian kernel of bandwidth sigma for Fourier features).

    A sweep over N draws N_max features once and uses the first N columns, so its models are nested.
    """
    d = X.shape[1]
    g = torch.Generator().manual_seed(seed)
    if kind == "relu":
        W = torch.randn(d, n_features, generator=g, dtype=torch.float64) / d ** 0.5
        b = torch.randn(n_features, generator=g, dtype=torch.float64)
        return torch.relu(X @ W + b) / n_features ** 0.5
    if kind == "fourier":
        W = torch.randn(d, n_features, generator=g, dtype=torch.float64) / bandwidth
        b = 2 * torch.pi * torch.rand(n_features, generator=g, dtype=torch.float64)
        return (2.0 / n_features) ** 0.5 * torch.cos(X @ W + b)
    raise ValueError(f"unknown feature map {kind!r}; choose from {', '.join(FEATURES)}")


def _curves(kind, Xtr, Ytr, Xte, yte, sizes, ridges, seed, bandwidth):
    """Test squared risk, test 0-1 error, train risk and solution norm: arrays (ridges, sizes)."""
    Ftr = random_features(kind, Xtr, sizes[-1], seed, bandwidth)
    Fte = random_features(kind, Xte, sizes[-1], seed, bandwidth)
    Yte = torch.nn.functional.one_hot(yte, Ytr.shape[1]).double()
    out = np.zeros((4, len(ridges), len(sizes)))
    for j, N in enumerate(sizes):
        for i, w in enumerate(ridge_solutions(Ftr[:, :N], Ytr, ridges)):
            pred = Fte[:, :N] @ w
            out[0, i, j] = float(((pred - Yte) ** 2).sum(1).mean())
            out[1, i, j] = float((pred.argmax(1) != yte).double().mean())
            out[2, i, j] = float(((Ftr[:, :N] @ w - Ytr) ** 2).sum(1).mean())
            out[3, i, j] = float(torch.linalg.norm(w))
    return out


def run(cfg: RandomFeaturesConfig, ctx: RunContext) -> StudyResult:
    sizes = [max(1, int(round(r * cfg.n_train))) for r in cfg.ratios]
    curves = np.zeros((len(cfg.datasets), len(cfg.features), 4, len(cfg.ridges), len(sizes)))
    bandwidths = {}
    with ctx.progress.bar(len(cfg.datasets) * len(cfg.features) * cfg.feature_seeds, "random features") as bar:
        for a, name in enumerate(cfg.datasets):
            data = load_dataset(name, seed=cfg.seed, n_train=cfg.n_train, n_test=cfg.n_test,
                                data_dir=(cfg.data_dir or ctx.data_dir) if name == "mnist" else None)
            Xtr, Xte = _standardize(data.X_train.double().flatten(1), data.X_test.double().flatten(1))
            Ytr = torch.nn.functional.one_hot(data.y_train, data.n_classes).double()
            sigma = cfg.bandwidth or 0.5 * median_distance(Xtr)
            bandwidths[name] = sigma
            for b, kind in enumerate(cfg.features):
                for s in range(cfg.feature_seeds):
                    seed = (cfg.seed * 7919 + a * 131 + b) * 1009 + s
                    curves[a, b] += _curves(kind, Xtr, Ytr, Xte, data.y_test, sizes, cfg.ridges, seed, sigma)
                    bar.update(1)
    curves /= cfg.feature_seeds
    return _summarize(cfg, np.array(sizes), curves, bandwidths)


# ---------------------------------------------------------------- summary and checks

def peak_index(curve: np.ndarray) -> int:
    return int(np.nanargmax(curve))


def has_peak_at(curve: np.ndarray, at: int, margin: float) -> bool:
    """True if curve[at] exceeds both neighbours by more than ``margin`` (relative to the larger one)."""
    return bool(curve[at] > (1 + margin) * max(curve[at - 1], curve[at + 1]))


def _summarize(cfg, sizes, curves, bandwidths=None) -> StudyResult:
    """curves: (datasets, features, [test risk, test 0-1, train risk, norm], ridges, sizes)."""
    ratios = np.array(cfg.ratios, dtype=float)
    at = int(np.flatnonzero(ratios == 1.0)[0])
    lam_big = cfg.ridges[-1]
    names = [f"{d}/{f}" for d in cfg.datasets for f in cfg.features]
    flat = curves.reshape(len(names), *curves.shape[2:])
    risk_peak = [peak_index(c[0, 0]) for c in flat]
    err_peak = [peak_index(c[1, 0]) for c in flat]
    norm_peak = [peak_index(c[3, 0]) for c in flat]
    big_peaked = [has_peak_at(c[0, -1], at, cfg.margin) for c in flat]
    second = [(c[1, 0, -1], c[1, 0, :at].min()) for c in flat]

    def where(idx):
        return ", ".join(f"{nm}: N/n={ratios[i]:g}" for nm, i in zip(names, idx))

    checks = [
        Check("test risk peaks at N = n (minimum-norm, squared loss)",
              "argmax over N of the test squared loss within one grid step of N/n = 1, for every curve",
              where(risk_peak), all(abs(i - at) <= 1 for i in risk_peak), BELKIN),
        Check("solution norm peaks at N = n",
              "argmax over N of |w| (minimum-norm solution) is exactly N/n = 1, for every curve",
              where(norm_peak), all(i == at for i in norm_peak),
              "Belkin et al. 2019 (PNAS), Fig. 2 (norm of the RFF solution)"),
        Check("test 0-1 error peaks at N = n",
              "argmax over N of the test classification error within one grid step of N/n = 1, for every curve",
              where(err_peak), all(abs(i - at) <= 1 for i in err_peak), BELKIN),
        Check(f"ridge lambda={lam_big:g} removes the peak",
              f"test risk at N = n not above both neighbours by more than {100 * cfg.margin:g}%, for every curve",
              ", ".join(f"{nm}: {fmt(c[0, -1, at])} vs {fmt(c[0, -1, at - 1])}/{fmt(c[0, -1, at + 1])}"
                        for nm, c in zip(names, flat)),
              not any(big_peaked), "Belkin et al. 2019 (PNAS) Sec. on regularization; Nakkiran et al. 2020 "
              "(Optimal regularization can mitigate double descent)"),
        Check("the second descent beats the first",
              "test 0-1 error at the largest N below the best error at N < n, for every curve",
              ", ".join(f"{nm}: {100 * last:.1f}% vs {100 * best:.1f}%" for nm, (last, best) in zip(names, second)),
              all(last < best for last, best in second), BELKIN + " (global minimum at the largest N)"),
    ]
    metrics = {
        "n_train": int(cfg.n_train), "ratios": ratios.tolist(), "sizes": [int(s) for s in sizes],
        "ridges": list(cfg.ridges), "curves": names, "bandwidths": bandwidths or {},
        "risk_peak_ratio": {nm: float(ratios[i]) for nm, i in zip(names, risk_peak)},
        "norm_peak_ratio": {nm: float(ratios[i]) for nm, i in zip(names, norm_peak)},
        "error_peak_ratio": {nm: float(ratios[i]) for nm, i in zip(names, err_peak)},
        "test_risk_at_threshold": {nm: float(c[0, 0, at]) for nm, c in zip(names, flat)},
        "test_error_at_threshold": {nm: float(c[1, 0, at]) for nm, c in zip(names, flat)},
        "test_error_at_largest_N": {nm: float(c[1, 0, -1]) for nm, c in zip(names, flat)},
        "largest_ridge_peaked": {nm: bool(p) for nm, p in zip(names, big_peaked)},
    }
    arrays = {"ratios": ratios, "sizes": np.asarray(sizes), "ridges": np.asarray(cfg.ridges, dtype=float),
              "test_risk": curves[:, :, 0], "test_error": curves[:, :, 1], "train_risk": curves[:, :, 2],
              "norm": curves[:, :, 3]}
    worst = max(zip(names, flat), key=lambda t: t[1][0, 0, at])
    notes = (f"With the minimum-norm solution the test risk peaks at N/n = "
             f"{', '.join(sorted({f'{ratios[i]:g}' for i in risk_peak}))} (worst: {worst[0]}, squared loss "
             f"{fmt(worst[1][0, 0, at])} at N = n) and the norm at N/n = "
             f"{', '.join(sorted({f'{ratios[i]:g}' for i in norm_peak}))}; ridge lambda={lam_big:g} "
             + ("leaves no peak." if not any(big_peaked) else "still leaves a peak on "
                + ", ".join(nm for nm, p in zip(names, big_peaked) if p) + "."))
    return StudyResult(metrics, checks, arrays, {"random_features": _figure(cfg, ratios, names, flat)}, notes=notes)


def _figure(cfg, ratios, names, flat):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(names), figsize=(3.6 * len(names), 8.4), sharex=True, squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(cfg.ridges)))
    for k, (nm, c) in enumerate(zip(names, flat)):
        for i, lam in enumerate(cfg.ridges):
            label = "min-norm (λ=0)" if lam == 0 else f"λ={lam:g}"
            axes[0, k].plot(ratios, c[0, i], "o-", ms=3, color=colors[i], label=label)
            axes[1, k].plot(ratios, 100 * c[1, i], "o-", ms=3, color=colors[i], label=label)
            axes[2, k].plot(ratios, c[3, i], "o-", ms=3, color=colors[i], label=label)
        axes[0, k].set_title(nm, fontsize=10)
        for row in range(3):
            axes[row, k].axvline(1.0, color="k", ls=":", lw=1)
            axes[row, k].set_xscale("log")
            axes[row, k].grid(alpha=0.3)
        axes[0, k].set_yscale("log")
        axes[2, k].set_yscale("log")
        axes[2, k].set_xlabel("features / training points  N/n")
    axes[0, 0].set_ylabel("test squared loss")
    axes[1, 0].set_ylabel("test error (%)")
    axes[2, 0].set_ylabel("norm |w| of the solution")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Random-feature double descent, n={cfg.n_train} (Belkin et al. 2019)", fontsize=11)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="random-features",
    description="Min-norm least squares on N random ReLU/Fourier features: risk and norm peak at N = n; ridge removes it.",
    paper="Belkin, Hsu, Ma, Mandal 2019 (PNAS); extreme learning machines",
    config=RandomFeaturesConfig, presets=PRESETS, run=run))
