"""What a nonlinearity keeps of its input: linear read-out R^2, per-unit information, next-AM capacity.

The essay "Towards demystifying over-parameterization" (issue 7) reads a network as AM -> separator (the
nonlinearity) -> AM ..., and warns that separators lose information: the square loses the sign bit, a
threshold keeps one bit, a high-gain sigmoid soft-binarizes; while random nonlinear features before a
weighted sum raise what the next AM can store (the extreme learning machine, Huang et al. 2006; random
features, Rahimi & Recht 2007; Cover 1965 for threshold units).

Setup: inputs u ~ N(0, I_k), a random projection z = W u with W of shape (D, k) and entries N(0, 1/k) (so
each z_j ~ N(0, 1)), features h = f(g z). Measured per (f, g):
- R^2 of the best linear read-out of u from h (least squares with bias, fitted on train, scored on test);
- R^2 of a linear read-out of the quadratic monomials u_a u_b (shows what the square keeps);
- sign accuracy: a linear read-out of sign(u_1);
- bits per unit: I(z; s + N(0, sigma^2)) with s = f(g z) scaled to unit variance (a fixed 20 dB output SNR
  for sigma = 0.1), by numerical integration over z and the output;
- next-AM capacity: the number of patterns a pseudo-inverse AM on h stores exactly = rank of the feature
  matrix of N >= D inputs (identity: k; square: k(k+1)/2, the quadratic forms; generic nonlinearities: D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from overparam.config import ConfigError, StudyConfig, param
from overparam.studies.base import Check, FLOAT64, MAX_EXAMPLES, RunContext, Study, StudyResult, fmt, register

NONLINEARITIES = ("identity", "relu", "abs", "square", "sign", "tanh", "sigmoid")
ESSAY = "essay 'Towards demystifying over-parameterization' (issue 7)"
ELM = "Huang et al. 2006 (extreme learning machine); Cover 1965"


def apply(name: str, x: np.ndarray) -> np.ndarray:
    if name == "identity":
        return x
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "abs":
        return np.abs(x)
    if name == "square":
        return x * x
    if name == "sign":
        return np.where(x >= 0, 1.0, -1.0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * x))
    raise ValueError(f"nonlinearity: {name!r} is not allowed; choose one of: {', '.join(NONLINEARITIES)}")


@dataclass
class NonlinearityInformationConfig(StudyConfig):
    in_dim: int = param(8, "dimension k of the input u", min=1, max=64)
    width: int = param(256, "number D of random projections (features)", min=4, max=4096)
    nonlinearities: list[str] = param(list(NONLINEARITIES), "nonlinearities f", choices=NONLINEARITIES)
    gains: list[float] = param([0.5, 1.0, 2.0, 5.0, 20.0], "gains g in f(g z)", min=1e-3, max=1e3)
    n_train: int = param(3000, "inputs to fit the linear read-outs", min=10, max=MAX_EXAMPLES)
    n_test: int = param(2000, "inputs to score them", min=10, max=MAX_EXAMPLES)
    output_noise: float = param(0.1, "output noise std (outputs scaled to unit variance) for bits per unit",
                                min=1e-3, max=10.0)
    grid: int = param(6000, "z-grid points of the information integral", min=200, max=100000)

    def validate(self) -> None:
        if self.n_train < self.width + 1:
            raise ConfigError(f"n_train: needs at least width + 1 = {self.width + 1} inputs for the read-outs")
        if sorted(self.gains) != list(self.gains):
            raise ConfigError("gains: must be increasing, e.g. 0.5,1,5,20")

    def peak_bytes(self) -> dict[str, float]:
        """The features of the training and test inputs and their least-squares read-outs (float64)."""
        rank_inputs = max(2 * self.width, 2 * self.in_dim ** 2)
        return {"n_train or width": FLOAT64 * 4 * (self.n_train + self.n_test) * self.width,
                "width": FLOAT64 * 2 * rank_inputs * self.width}


PRESETS = {
    "quick": {},
    "paper": {"width": 512, "gains": [0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0], "n_train": 10000, "n_test": 5000,
              "grid": 20000},
}


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    sst = np.sum((target - target.mean(axis=0)) ** 2)
    return float(1.0 - np.sum((pred - target) ** 2) / sst)


def _linear_readout(H_tr, T_tr, H_te):
    A = np.hstack([H_tr, np.ones((len(H_tr), 1))])
    coef, *_ = np.linalg.lstsq(A, T_tr, rcond=None)
    return np.hstack([H_te, np.ones((len(H_te), 1))]) @ coef


def _quadratic(U: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(U.shape[1])
    return (U[:, :, None] * U[:, None, :])[:, iu[0], iu[1]]


def bits_per_unit(name: str, gain: float, noise: float, grid: int = 6000) -> float:
    """I(z; s(z) + N(0, noise^2)) in bits, z ~ N(0, 1), s = f(gain z) scaled to unit variance.

    I = h(Y) - h(noise); p_Y is the Gaussian-smoothed image of the z-grid, h(Y) integrated on a y-grid.
    """
    z = np.linspace(-7.5, 7.5, grid)
    w = np.exp(-0.5 * z * z)
    w /= w.sum()
    s = apply(name, gain * z)
    mu = np.sum(w * s)
    sd = math.sqrt(max(np.sum(w * (s - mu) ** 2), 1e-300))
    s = (s - mu) / sd
    y = np.arange(s.min() - 7 * noise, s.max() + 7 * noise, noise / 5)
    py = np.zeros_like(y)
    for start in range(0, len(y), 1024):   # bounded memory: y-chunks against the z-grid
        yy = y[start:start + 1024, None]
        py[start:start + 1024] = np.exp(-0.5 * ((yy - s[None, :]) / noise) ** 2) @ w
    py /= noise * math.sqrt(2 * math.pi)
    dy = y[1] - y[0]
    mask = py > 0
    h_y = -np.sum(py[mask] * np.log2(py[mask])) * dy
    h_noise = 0.5 * math.log2(2 * math.pi * math.e * noise ** 2)
    return float(h_y - h_noise)


def sign_r2_ceiling(k: int) -> float:
    """Best R^2 of any read-out of u ~ N(0, I_k) that sees only its direction u/|u|.

    E[u | u/|u|] = E|u| u/|u| (the length is independent of the direction), so the explained fraction is
    (E|u|)^2 / E|u|^2 with E|u| = sqrt(2) Gamma((k+1)/2) / Gamma(k/2) (chi distribution). Sign features of
    random projections are scale-invariant, hence bounded by this.
    """
    mean_norm = math.sqrt(2) * math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2))
    return mean_norm ** 2 / k


def feature_rank(H: np.ndarray, rtol: float = 1e-9) -> int:
    s = np.linalg.svd(H, compute_uv=False)
    return int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0


def run(cfg: NonlinearityInformationConfig, ctx: RunContext) -> StudyResult:
    rng = np.random.default_rng(cfg.seed)
    k, D = cfg.in_dim, cfg.width
    W = rng.standard_normal((D, k)) / math.sqrt(k)
    U_tr, U_te = rng.standard_normal((cfg.n_train, k)), rng.standard_normal((cfg.n_test, k))
    Q_tr, Q_te = _quadratic(U_tr), _quadratic(U_te)
    n_rank = max(2 * D, 2 * k * k)
    U_rank = rng.standard_normal((n_rank, k))
    shape = (len(cfg.nonlinearities), len(cfg.gains))
    r2_lin, r2_quad, sign_acc, bits, capacity = (np.zeros(shape) for _ in range(5))
    with threadpool_limits(limits=1), ctx.progress.bar(shape[0] * shape[1], "nonlinearity-information") as bar:
        for i, name in enumerate(cfg.nonlinearities):
            for j, g in enumerate(cfg.gains):
                H_tr, H_te = apply(name, g * U_tr @ W.T), apply(name, g * U_te @ W.T)
                r2_lin[i, j] = _r2(_linear_readout(H_tr, U_tr, H_te), U_te)
                r2_quad[i, j] = _r2(_linear_readout(H_tr, Q_tr, H_te), Q_te)
                pred = _linear_readout(H_tr, np.sign(U_tr[:, 0]), H_te)
                sign_acc[i, j] = float(np.mean(np.sign(pred) == np.sign(U_te[:, 0])))
                bits[i, j] = bits_per_unit(name, g, cfg.output_noise, cfg.grid)
                capacity[i, j] = feature_rank(apply(name, g * U_rank @ W.T))
                bar.update()
    return _summarize(cfg, r2_lin, r2_quad, sign_acc, bits, capacity)


def _row(cfg, name, arr):
    return arr[cfg.nonlinearities.index(name)] if name in cfg.nonlinearities else None


def _summarize(cfg, r2_lin, r2_quad, sign_acc, bits, capacity) -> StudyResult:
    k, D = cfg.in_dim, cfg.width
    n_quad = k * (k + 1) // 2
    checks = []
    ident = _row(cfg, "identity", r2_lin)
    if ident is not None:
        checks.append(Check("identity keeps everything", "linear read-out R^2 of u > 0.999 at every gain",
                            f"min {fmt(float(ident.min()), 4)}", bool(ident.min() > 0.999), ESSAY))
        exact = 0.5 * math.log2(1 + 1 / cfg.output_noise ** 2)
        b = _row(cfg, "identity", bits)
        dev = float(np.max(np.abs(b - exact)))
        checks.append(Check("information integral matches the Gaussian channel",
                            f"identity: 0.5 log2(1 + 1/sigma^2) = {exact:.3f} bits within 0.02",
                            f"max deviation {fmt(dev)}", dev < 0.02, "Shannon 1948 (Gaussian channel capacity)"))
    sq = _row(cfg, "square", r2_lin)
    if sq is not None:
        lin = float(max(sq.max(), (_row(cfg, "abs", r2_lin) if "abs" in cfg.nonlinearities else sq).max()))
        quad = float(_row(cfg, "square", r2_quad).min())
        acc = float(_row(cfg, "square", sign_acc).max())
        checks.append(Check("the square loses the sign (and only the sign)",
                            "square/abs: linear R^2 of u < 0.05 and sign accuracy < 0.6 (chance 0.5); square: "
                            "R^2 of u u^T > 0.99",
                            f"R^2(u) <= {fmt(lin)}, sign acc <= {fmt(acc)}, R^2(u u^T) >= {fmt(quad, 4)}",
                            lin < 0.05 and acc < 0.6 and quad > 0.99, ESSAY))
    sgn = _row(cfg, "sign", bits)
    if sgn is not None:
        checks.append(Check("a threshold keeps at most one bit per unit",
                            "bits per unit of sign(g z) in [0.95, 1] at every gain",
                            f"{fmt(float(sgn.min()))} .. {fmt(float(sgn.max()))} bits",
                            bool(sgn.max() <= 1.0 + 1e-3 and sgn.min() >= 0.95), ESSAY + "; Cover 1965"))
        for name in ("tanh", "sigmoid"):
            b = _row(cfg, name, bits)
            if b is not None and len(cfg.gains) >= 2:
                # sigmoid(x) = (1 + tanh(x/2))/2: at equal g the sigmoid is a tanh of half the gain
                checks.append(Check(f"a high-gain {name} soft-binarizes",
                                    "bits per unit fall with the gain, to within 0.6 bit of the sign's at gain "
                                    f"{cfg.gains[-1]:g}, from > 1 bit more at gain {cfg.gains[0]:g}",
                                    f"{fmt(float(b[0]))} -> {fmt(float(b[-1]))} bits (sign {fmt(float(sgn[-1]))})",
                                    bool(np.all(np.diff(b) < 1e-6) and abs(b[-1] - sgn[-1]) < 0.6
                                         and b[0] > sgn[0] + 1.0), ESSAY))
        r2s = _row(cfg, "sign", r2_lin)
        ceiling = sign_r2_ceiling(k)
        checks.append(Check("a threshold population keeps the direction, not the length",
                            f"sign features: linear R^2 of u <= (E|u|)^2 / E|u|^2 = {ceiling:.3f} (k={k}) and "
                            "within 0.05 of it",
                            f"{fmt(float(r2s.min()))} .. {fmt(float(r2s.max()))}",
                            bool(r2s.max() <= ceiling + 0.01 and r2s.min() >= ceiling - 0.05),
                            ESSAY + "; ceiling derived in sign_r2_ceiling"))
    cap_checks = []
    for name, expect in (("identity", k), ("square", n_quad), ("relu", D), ("abs", D), ("sign", D)):
        c = _row(cfg, name, capacity)
        if c is not None:
            cap_checks.append((name, expect, c))
    if cap_checks:
        ok = all(np.all(c == min(e, D)) for _, e, c in cap_checks)
        checks.append(Check("next-AM capacity: nonlinear random features raise it to the width",
                            "; ".join(f"{n} {min(e, D)}" for n, e, _ in cap_checks),
                            "; ".join(f"{n} {int(c.min())}" + (f"-{int(c.max())}" if c.max() != c.min() else "")
                                      for n, _, c in cap_checks), bool(ok), ELM))
    metrics = {"nonlinearities": list(cfg.nonlinearities), "gains": list(cfg.gains),
               "r2_linear": r2_lin.tolist(), "r2_quadratic": r2_quad.tolist(), "sign_accuracy": sign_acc.tolist(),
               "bits_per_unit": bits.tolist(), "next_am_capacity": capacity.astype(int).tolist()}
    arrays = {"gains": np.array(cfg.gains), "r2_linear": r2_lin, "r2_quadratic": r2_quad,
              "sign_accuracy": sign_acc, "bits_per_unit": bits, "next_am_capacity": capacity}
    notes = ("Linear read-out R^2 at gain 1: " + ", ".join(
        f"{n} {r2_lin[i, min(1, len(cfg.gains) - 1)]:.2f}" for i, n in enumerate(cfg.nonlinearities)) + ". "
             + "Next-AM capacity: " + ", ".join(f"{n} {int(capacity[i].max())}"
                                                 for i, n in enumerate(cfg.nonlinearities)) + f" (of width {D}).")
    return StudyResult(metrics, checks, arrays, {"nonlinearity_information": _figure(cfg, r2_lin, bits, capacity)},
                       notes=notes)


def _figure(cfg, r2_lin, bits, capacity):
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, name in enumerate(cfg.nonlinearities):
        a1.plot(cfg.gains, r2_lin[i], "o-", color=f"C{i}", label=name)
        a2.plot(cfg.gains, bits[i], "o-", color=f"C{i}", label=name)
    a1.set_xscale("log")
    a1.set_xlabel("gain g")
    a1.set_ylabel("R² of linear read-out of u")
    a1.set_title(f"What a linear read-out recovers (k={cfg.in_dim}, D={cfg.width})")
    a1.legend(fontsize=8)
    a2.axhline(1.0, color="k", ls=":", lw=1, label="1 bit")
    a2.set_xscale("log")
    a2.set_xlabel("gain g")
    a2.set_ylabel("bits per unit")
    a2.set_title(f"I(z; f(gz) + noise), output SNR {-20 * math.log10(cfg.output_noise):.0f} dB")
    j = min(1, len(cfg.gains) - 1)
    x = np.arange(len(cfg.nonlinearities))
    a3.bar(x, capacity[:, j], color=[f"C{i}" for i in range(len(x))])
    for val, lab in ((cfg.in_dim, "k"), (cfg.in_dim * (cfg.in_dim + 1) // 2, "k(k+1)/2"), (cfg.width, "D")):
        a3.axhline(val, color="gray", ls="--", lw=1)
        a3.text(len(x) - 0.5, val, lab, va="bottom", ha="right", fontsize=8)
    a3.set_xticks(x, cfg.nonlinearities, rotation=30)
    a3.set_ylabel("patterns the next AM stores exactly")
    a3.set_title(f"Next-AM capacity (gain {cfg.gains[j]:g})")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


STUDY = register(Study(
    name="nonlinearity-information",
    description="What identity, ReLU, abs, square, sign, tanh and sigmoid keep: read-out R^2, bits, next-AM capacity.",
    paper="essay 'Towards demystifying over-parameterization' (issue 7); Huang et al. 2006; Cover 1965",
    config=NonlinearityInformationConfig, presets=PRESETS, run=run))
