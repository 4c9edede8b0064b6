"""A neuron's weighted sum as a linear associative memory: capacity, error correction and crosstalk.

The essay "Towards demystifying over-parameterization in deep learning" (issue 7): with inputs of constant
length, a weighted sum stores n patterns as n exact outputs up to its capacity n = d; under capacity it
attenuates input noise (a repetition code), at capacity it recalls exactly with no error correction, over
capacity every recall carries Gaussian-like crosstalk, while vector recalls stay close in angle.
Classic sources: Kohonen 1972 (correlation-matrix memory = Hebbian), Kohonen & Ruohonen 1973 (optimal
linear AM = pseudo-inverse). The theory curves are the closed forms of overparam.memory.theory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from overparam.config import ConfigError, StudyConfig, param
from overparam.memory import LinearAM, cosine_to_targets, random_patterns, random_targets, theory
from overparam.studies.base import Check, FLOAT64, RunContext, Study, StudyResult, fmt, register

ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7)"
KOHONEN = "Kohonen & Ruohonen 1973 (optimal linear AM); closed forms in overparam.memory.theory"
HEBB = "Kohonen 1972 (correlation-matrix memory); crosstalk variance (n-1)/d, overparam.memory.theory"
RULE_COLORS = {"pinv": "C0", "hebbian": "C3", "sgd": "C2"}


@dataclass
class AmCapacityConfig(StudyConfig):
    d: int = param(256, "input dimension of the memory (its capacity for the pseudo-inverse rule)", min=8, max=4096)
    gammas: list[float] = param([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25,
                                 1.5, 1.75, 2.0], "loads gamma = n / d (stored patterns over dimension)",
                                min=0.001, max=8.0)
    rules: list[str] = param(["pinv", "hebbian", "sgd"], "storage rules", choices=("pinv", "hebbian", "sgd"))
    targets: str = param("binary", "target values: +-1 or N(0,1)", choices=("binary", "gaussian"))
    m: int = param(32, "components of the vector targets (each column is also a scalar memory)", min=1, max=1024)
    trials: int = param(3, "independent pattern sets per load", min=1, max=1000)
    noise_std: float = param(0.02, "std of the input noise per entry (inputs have unit length)", min=1e-6, max=10.0)
    noise_draws: int = param(4, "noisy recalls per stored pattern", min=1, max=100)
    sgd_steps: int = param(100, "full-batch gradient-descent steps of the sgd rule (step 1/(1+sqrt(gamma))^2)",
                           min=1, max=100000)

    def validate(self) -> None:
        if sorted(self.gammas) != list(self.gammas) or len(set(self.gammas)) != len(self.gammas):
            raise ConfigError("gammas: must be strictly increasing, e.g. 0.1,0.5,1,2")
        if len(set(self.rules)) != len(self.rules):
            raise ConfigError("rules: each rule at most once")
        if max(self.gammas) * self.d < 2:
            raise ConfigError("gammas: the largest load must store at least 2 patterns")

    def peak_bytes(self) -> dict[str, float]:
        """The largest load's patterns with the pseudo-inverse's work arrays, and the crosstalk kept."""
        n = max(1, round(max(self.gammas) * self.d))
        return {"d or gammas": FLOAT64 * (4 * n * self.d + 3 * n * self.m),
                "trials": FLOAT64 * self.trials * n * self.m}


PRESETS = {
    # d=256 as in the issue, few trials: ~6 s.
    "quick": {"trials": 4, "m": 32, "sgd_steps": 60},
    # More draws for tight error bars, a denser grid, slower sgd convergence shown.
    "paper": {"trials": 20, "m": 64, "sgd_steps": 200,
              "gammas": [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1,
                         1.15, 1.25, 1.5, 1.75, 2.0]},
}


def _n_of(gamma: float, d: int) -> int:
    return max(1, int(round(gamma * d)))


def _sgd_lr(gamma: float) -> float:
    return 1.0 / (1.0 + math.sqrt(gamma)) ** 2   # 1 / Marchenko-Pastur upper edge: stable, fast


def _measure(cfg: AmCapacityConfig, rule: str, n: int, trial: int) -> dict:
    d, gamma = cfg.d, n / cfg.d
    base = (cfg.seed * 7919 + n) * 1009 + trial
    X = random_patterns(n, d, seed=base)
    Y = random_targets(n, cfg.m, seed=base + 10**7, kind=cfg.targets)
    am = LinearAM(d, rule=rule, lr=_sgd_lr(gamma), epochs=cfg.sgd_steps).store(X, Y)
    Yh = am.recall(X)
    a = float(np.sum(Yh * Y) / np.sum(Y * Y))
    cross = Yh - a * Y
    power = float(np.mean(Y ** 2))
    noise = [np.mean((am.recall(X, noise_std=cfg.noise_std, seed=base + 2 * 10**7 + k) - Yh) ** 2)
             for k in range(cfg.noise_draws)]
    # output noise-to-signal over input noise-to-signal (inputs have unit length)
    gain = float(np.mean(noise)) / power / (d * cfg.noise_std ** 2)
    bit = float(np.mean(np.sign(Yh) != np.sign(Y))) if cfg.targets == "binary" else float("nan")
    return {"relative_mse": float(np.mean((Yh - Y) ** 2)) / power, "signal_gain": a,
            "crosstalk_var": float(np.mean(cross ** 2)) / power, "noise_gain": gain, "bit_error": bit,
            "cosine": float(np.mean(cosine_to_targets(Yh, Y))) if cfg.m > 1 else float("nan"),
            "crosstalk": (cross / math.sqrt(power)).ravel()}


QUANTITIES = ("relative_mse", "signal_gain", "crosstalk_var", "noise_gain", "bit_error", "cosine")


def run(cfg: AmCapacityConfig, ctx: RunContext) -> StudyResult:
    ns = [_n_of(g, cfg.d) for g in cfg.gammas]
    gam = np.array(ns) / cfg.d
    meas = {r: {q: np.zeros(len(ns)) for q in QUANTITIES} for r in cfg.rules}
    theo = {r: {q: np.zeros(len(ns)) for q in QUANTITIES} for r in cfg.rules}
    crosstalk_top = {}
    total = len(cfg.rules) * len(ns) * cfg.trials
    # many small LAPACK calls: BLAS threads only contend (100x slower on a busy 2-core machine)
    with threadpool_limits(limits=1), ctx.progress.bar(total, "am-capacity") as bar:
        for rule in cfg.rules:
            for i, n in enumerate(ns):
                rows = []
                for t in range(cfg.trials):
                    rows.append(_measure(cfg, rule, n, t))
                    bar.update()
                for q in QUANTITIES:
                    meas[rule][q][i] = np.mean([r[q] for r in rows])
                pred = theory.predict(rule, n, cfg.d, lr=_sgd_lr(n / cfg.d), steps=cfg.sgd_steps)
                for q in QUANTITIES:
                    theo[rule][q][i] = pred[q]
                if i == len(ns) - 1:
                    crosstalk_top[rule] = np.concatenate([r["crosstalk"] for r in rows])
    ks = {r: float(stats.kstest((c - c.mean()) / c.std(), "norm").statistic) for r, c in crosstalk_top.items()}
    return _summarize(cfg, gam, ns, meas, theo, crosstalk_top, ks)


def _summarize(cfg, gam, ns, meas, theo, crosstalk_top, ks) -> StudyResult:
    d = cfg.d
    checks = []
    under, over = gam <= 1.0, gam > 1.0
    if "pinv" in meas:
        pm, pt = meas["pinv"], theo["pinv"]
        worst = float(np.max(pm["relative_mse"][under])) if under.any() else float("nan")
        checks.append(Check("pseudo-inverse recall is exact up to capacity",
                            "relative recall MSE < 1e-8 for every gamma <= 1", f"max {fmt(worst)}",
                            bool(under.any()) and worst < 1e-8, KOHONEN))
        if over.any():
            dev = float(np.max(np.abs(pm["relative_mse"][over] - pt["relative_mse"][over])))
            checks.append(Check("over capacity the recall error is 1 - 1/gamma",
                                "|measured - (1 - 1/gamma)| < 0.03 at every gamma > 1", f"max deviation {fmt(dev)}",
                                dev < 0.03, KOHONEN))
        ok = ((gam <= 0.9) | (gam >= 1.25)) & np.isfinite(pt["noise_gain"])
        if ok.any():
            rel = float(np.max(np.abs(pm["noise_gain"][ok] / pt["noise_gain"][ok] - 1)))
            checks.append(Check("output-noise gain follows the inverse-Wishart law",
                                "measured within 25% of n(d-2)/(d(d-n-1)) (gamma <= 0.9) and d/(n-d-1) (gamma >= 1.25)",
                                f"max relative deviation {fmt(rel)}", rel < 0.25, KOHONEN))
        at = np.flatnonzero(np.isclose(gam, 1.0))
        half = int(np.argmin(np.abs(gam - 0.5)))
        if len(at):
            ratio = pm["noise_gain"][at[0]] / pm["noise_gain"][half]
            checks.append(Check("no error correction at capacity: the noise gain blows up as gamma -> 1",
                                f"gain at gamma=1 > 20 x gain at gamma={gam[half]:.2g}",
                                f"{fmt(pm['noise_gain'][at[0]])} vs {fmt(pm['noise_gain'][half])}",
                                bool(ratio > 20), ESSAY))
        small = gam <= 0.3
        if small.any():
            gmax = float(np.max(pm["noise_gain"][small]))
            checks.append(Check("error correction under capacity (repetition code)",
                                "output noise-to-signal below the input's (gain < 1) for gamma <= 0.3; theory "
                                "gamma/(1-gamma) < 1 up to gamma = 1/2", f"max gain {fmt(gmax)}", gmax < 1.0, ESSAY))
    if "hebbian" in meas:
        hm, ht = meas["hebbian"], theo["hebbian"]
        nn_ = np.array(ns)
        use = nn_ >= 8
        # sampling error: each pattern's crosstalk sums n-1 chi-square-like terms -> relative sd ~ sqrt(2/((n-1) T))
        tol = 0.05 + 2.0 * np.sqrt(2.0 / ((nn_ - 1).clip(1) * cfg.trials))
        dev = np.abs(hm["crosstalk_var"] / ht["crosstalk_var"] - 1)
        worst = int(np.argmax((dev / tol)[use])) if use.any() else 0
        idx = np.flatnonzero(use)[worst] if use.any() else 0
        checks.append(Check("Hebbian crosstalk variance is (n-1)/d",
                            "relative deviation < 0.05 + 2 sqrt(2/((n-1) trials)) at every load with n >= 8",
                            f"worst: {fmt(float(dev[idx]))} (tolerance {fmt(float(tol[idx]))}) at gamma={gam[idx]:.3g}",
                            bool(use.any() and np.all(dev[use] < tol[use])), HEBB))
    for rule in ("pinv", "hebbian"):
        if rule in ks and gam[-1] > 1:
            checks.append(Check(f"{rule}: over-capacity crosstalk is Gaussian-like",
                                f"KS statistic of standardized crosstalk at gamma={gam[-1]:.3g} < 0.05"
                                + (" (targets are +-1, not Gaussian)" if cfg.targets == "binary" else ""),
                                f"KS = {fmt(ks[rule])}", ks[rule] < 0.05, ESSAY))
            if cfg.m >= 16:
                c_m, c_t = meas[rule]["cosine"][-1], theo[rule]["cosine"][-1]
                checks.append(Check(f"{rule}: vector recalls stay close in angle over capacity",
                                    f"mean cosine at gamma={gam[-1]:.3g} within 0.03 of {fmt(c_t)} "
                                    f"({math.degrees(math.acos(min(1, c_t))):.0f} deg)",
                                    f"{fmt(c_m)} ({math.degrees(math.acos(min(1, c_m))):.0f} deg)",
                                    abs(c_m - c_t) < 0.03, ESSAY))
    if "sgd" in meas:
        sm, st = meas["sgd"], theo["sgd"]
        dev = float(np.max(np.abs(sm["relative_mse"] - st["relative_mse"])))
        rel = float(np.max(np.abs(sm["noise_gain"] / st["noise_gain"] - 1)))
        checks.append(Check("gradient descent follows its Marchenko-Pastur prediction",
                            f"after {cfg.sgd_steps} steps: recall MSE within 0.03 and noise gain within 25% "
                            "at every gamma",
                            f"max MSE deviation {fmt(dev)}, max gain deviation {fmt(rel)}",
                            dev < 0.03 and rel < 0.25, "overparam.memory.theory (gd_recall_error, gd_noise_gain)"))

    metrics = {"d": d, "gammas": gam.tolist(), "n": list(ns), "ks_crosstalk": ks}
    for rule in meas:
        for q in QUANTITIES:
            metrics[f"{rule}_{q}"] = meas[rule][q].tolist()
    arrays = {"gamma": gam}
    for rule in meas:
        for q in QUANTITIES:
            arrays[f"{rule}_{q}"] = meas[rule][q]
            arrays[f"{rule}_{q}_theory"] = theo[rule][q]
    for rule, c in crosstalk_top.items():
        arrays[f"{rule}_crosstalk_at_max_gamma"] = c
    notes = _notes(gam, meas, ks)
    return StudyResult(metrics, checks, arrays, {"am_capacity": _figure(cfg, gam, meas, crosstalk_top, ks)},
                       notes=notes)


def _notes(gam, meas, ks) -> str:
    parts = []
    if "pinv" in meas:
        pm = meas["pinv"]
        parts.append(f"Pseudo-inverse recall is exact up to gamma=1 and its error is {fmt(pm['relative_mse'][-1])} "
                     f"at gamma={gam[-1]:.3g}; its noise gain is {fmt(pm['noise_gain'][0])} at gamma={gam[0]:.3g} "
                     f"and {fmt(float(np.max(pm['noise_gain'])))} at its peak.")
    if ks:
        parts.append("Over capacity the crosstalk is Gaussian-like (KS " +
                     ", ".join(f"{r} {fmt(v)}" for r, v in ks.items()) + ").")
    return " ".join(parts)


def _theory_curves(cfg, rule):
    """Dense curves for the figure: exact finite-d forms for pinv/hebbian, Marchenko-Pastur for sgd."""
    d = cfg.d
    nmax = _n_of(cfg.gammas[-1], d)
    nmin = max(1, _n_of(cfg.gammas[0], d))
    ns = np.unique(np.linspace(nmin, nmax, 400).astype(int))
    ns = ns[(ns < d - 1) | (ns > d + 1)] if rule == "pinv" else ns
    g = ns / d
    rows = [theory.predict(rule, int(n), d, lr=_sgd_lr(n / d), steps=cfg.sgd_steps) for n in ns]
    return g, {q: np.array([r[q] for r in rows]) for q in QUANTITIES}


def _figure(cfg, gam, meas, crosstalk_top, ks):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ax_err, ax_gain), (ax_hist, ax_ang) = axes
    for rule in meas:
        col = RULE_COLORS[rule]
        g, th = _theory_curves(cfg, rule)
        lab = {"pinv": "pseudo-inverse", "hebbian": "Hebbian", "sgd": f"GD {cfg.sgd_steps} steps"}[rule]
        ax_err.plot(g, th["relative_mse"], "-", color=col, lw=1.5, alpha=0.7)
        ax_err.plot(gam, meas[rule]["relative_mse"], "o", color=col, ms=5, label=lab)
        gpos = np.where(np.isfinite(th["noise_gain"]), th["noise_gain"], np.nan)
        if rule == "pinv":   # split the curve at the pole gamma = 1
            for side in (g < 1, g > 1):
                ax_gain.plot(g[side], gpos[side], "-", color=col, lw=1.5, alpha=0.7)
        else:
            ax_gain.plot(g, gpos, "-", color=col, lw=1.5, alpha=0.7)
        ax_gain.plot(gam, meas[rule]["noise_gain"], "o", color=col, ms=5, label=lab)
        if cfg.m > 1:
            ang_t = np.degrees(np.arccos(np.clip(th["cosine"], -1, 1)))
            ax_ang.plot(g, ang_t, "-", color=col, lw=1.5, alpha=0.7)
            ax_ang.plot(gam, np.degrees(np.arccos(np.clip(meas[rule]["cosine"], -1, 1))), "o", color=col, ms=5,
                        label=lab)
    for ax in (ax_err, ax_gain, ax_ang):
        ax.axvline(1.0, color="k", ls=":", lw=1)
        ax.set_xlabel("load γ = n / d")
        ax.grid(alpha=0.3)
    ax_err.set_ylabel("relative recall MSE (no input noise)")
    ax_err.set_title(f"Recall error (d={cfg.d}); lines: theory, dots: measured")
    ax_err.legend(fontsize=8)
    ax_gain.axhline(1.0, color="gray", ls="--", lw=1)
    ax_gain.set_yscale("log")
    ax_gain.set_ylabel("output-noise gain (out NSR / in NSR)")
    ax_gain.set_title("Input-noise gain: < 1 error-corrects, pole at γ = 1")
    ax_gain.legend(fontsize=8)
    ax_ang.set_ylabel("angle between vector recall and target (deg)")
    ax_ang.set_title(f"Vector recalls ({cfg.m} components)")
    ax_ang.legend(fontsize=8)
    xs = np.linspace(-4, 4, 200)
    for rule, c in crosstalk_top.items():
        z = (c - c.mean()) / c.std()
        ax_hist.hist(z, bins=60, range=(-4, 4), density=True, histtype="step", lw=1.5, color=RULE_COLORS[rule],
                     label=f"{rule} (KS {ks[rule]:.3f})")
    ax_hist.plot(xs, stats.norm.pdf(xs), "k--", lw=1, label="N(0,1)")
    ax_hist.set_title(f"Standardized crosstalk at γ={gam[-1]:.3g} ({cfg.targets} targets)")
    ax_hist.set_xlabel("crosstalk / sd")
    ax_hist.legend(fontsize=8)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="am-capacity",
    description="A weighted sum as a linear associative memory: exact recall up to n=d, noise gain, crosstalk.",
    paper="Kohonen 1972; Kohonen & Ruohonen 1973; essay 'Towards demystifying over-parameterization' (issue 7)",
    config=AmCapacityConfig, presets=PRESETS, run=run))
