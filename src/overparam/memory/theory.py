"""Closed-form predictions for linear associative memories (derived here; verified by simulation in tests).

Setting and notation. n patterns x_i in R^d, load gamma = n / d. Patterns are either ``sphere`` (uniform on
the unit sphere: what ``LinearAM(normalize=True)`` sees) or ``gaussian`` (entries i.i.d. N(0, 1/d)).
Targets are i.i.d., zero mean, unit variance (e.g. +-1 or N(0, 1)), independent of the patterns; every
formula below only uses E[y y^T] = I, so it holds for binary and Gaussian targets alike. Vector targets
are m such columns, and every per-column statement applies to each column.

Quantities.
- relative recall MSE: E (y_hat_i - y_i)^2 / E y_i^2 on the stored patterns, zero input noise.
- signal gain a and crosstalk: y_hat_i = a y_i + c_i with a the regression slope of recalls on targets;
  c_i is the crosstalk noise.
- output-noise gain G: recall with N(0, s^2 I_d) added to the input. The output noise is e . w with
  variance s^2 ||w||^2. G is the output noise-to-signal ratio over the input one,
      G = (s^2 ||w||^2 / E y^2) / (d s^2 / E||x||^2) = ||w||^2 / d   (unit-length inputs, unit-variance y).
  G < 1 means the memory error-corrects (a repetition code: a pattern spread over d entries);
  G > 1 means it amplifies input noise.

Derivations (short).
- pinv, n <= d: X W = Y exactly (X has full row rank almost surely) -> zero error.
- pinv, n > d: y_hat = P y with P the rank-d orthogonal projector onto the column space of X (n x n).
  E||(I - P) y||^2 = tr(I - P) = n - d, so the relative MSE is 1 - d/n = 1 - 1/gamma (exact).
  Slope a = tr(P)/n = 1/gamma; since sum_j P_ij^2 = P_ii, E c_i^2 = E P_ii - a^2 = a (1 - a).
- pinv noise gain, n < d: ||w||^2 = y^T (X X^T)^{-1} y, so E||w||^2 = E tr (X X^T)^{-1}.
  * gaussian rows: X X^T ~ Wishart_n(d, I/d), E[W^{-1}] = d I / (d - n - 1) -> G = n / (d - n - 1).
  * sphere rows: [(X X^T)^{-1}]_ii = 1 / ||P_perp x_i||^2, P_perp projecting off the span of the other n - 1
    rows; for x_i uniform on the sphere ||P_perp x_i||^2 ~ Beta((d-n+1)/2, (n-1)/2), whose inverse has
    mean (d - 2)/(d - n - 1). Hence G = n (d - 2) / (d (d - n - 1)) (exact, n <= d - 2).
  Both -> gamma / (1 - gamma) as d -> infinity: G < 1 only for gamma < 1/2, and G -> infinity at gamma -> 1.
- pinv noise gain, n > d: w = (X^T X)^{-1} X^T y, E||w||^2 = E tr (X^T X)^{-1}; gaussian rows give
  X^T X ~ Wishart_d(n, I/d) and G = d / (n - d - 1) (exact; approximate for sphere rows, error O(1/d)).
  -> 1 / (gamma - 1).
- hebbian (W = X^T Y): y_hat_i = y_i ||x_i||^2 + sum_{j != i} y_j (x_i . x_j). With E (x_i . x_j)^2 = 1/d
  and the cross terms of zero mean, the crosstalk variance is (n - 1)/d (exact for both pattern kinds);
  gaussian rows add the length fluctuation Var ||x_i||^2 = 2/d, so the relative MSE is (n - 1)/d (sphere)
  or (n + 1)/d (gaussian). E||w||^2 = sum_j E y_j^2 ||x_j||^2 = n, so G = n / d = gamma.
- bit errors (+-1 targets, sign read-out, crosstalk taken as Gaussian -- CLT over many terms):
  pinv over capacity Phi(-a / sqrt(a (1 - a))) = Phi(-1 / sqrt(gamma - 1)); hebbian Phi(-sqrt(d / (n - 1))).
- vector recalls, m -> infinity: cos(y_hat_i, y_i) -> a / sqrt(a^2 + Var c) : pinv sqrt(1/gamma) over
  capacity (1 below it), hebbian 1 / sqrt(1 + (n - 1)/d). Finite m adds O(1/m) corrections.
- gradient descent (the ``sgd`` rule, full batch, step lr on 0.5 ||X W - Y||^2 from W = 0, t steps):
  along the k-th eigen-direction of X X^T (eigenvalue l_k) the error is multiplied by (1 - lr l_k)^t and the
  weight component is (1 - (1 - lr l_k)^t) / sqrt(l_k) times the target's projection. Hence
      relative MSE = (1/n) sum_k (1 - lr l_k)^{2t},   G = (1/d) sum_{l_k > 0} (1 - (1 - lr l_k)^t)^2 / l_k,
  evaluated here with the Marchenko-Pastur law of X X^T (ratio gamma, edges (1 -+ sqrt(gamma))^2, mass
  1 - 1/gamma at zero when gamma > 1): a large-d approximation. t -> infinity recovers the pinv limits.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

PATTERN_KINDS = ("sphere", "gaussian")


def _kind(patterns: str) -> str:
    if patterns not in PATTERN_KINDS:
        raise ValueError(f"patterns: {patterns!r} is not allowed; choose one of: {', '.join(PATTERN_KINDS)}")
    return patterns


# -- pseudo-inverse ------------------------------------------------------------------------------
def pinv_recall_error(gamma):
    """Expected relative recall MSE of the pseudo-inverse AM at load gamma: 0 for gamma <= 1, else 1 - 1/gamma."""
    g = np.asarray(gamma, dtype=float)
    out = np.where(g <= 1.0, 0.0, 1.0 - 1.0 / np.maximum(g, 1e-300))
    return float(out) if out.ndim == 0 else out


def pinv_signal_gain(gamma):
    """Slope of recalls on targets: 1 for gamma <= 1, 1/gamma beyond (the recall shrinks toward 0)."""
    g = np.asarray(gamma, dtype=float)
    out = np.minimum(1.0, 1.0 / np.maximum(g, 1e-300))
    return float(out) if out.ndim == 0 else out


def pinv_crosstalk_variance(gamma):
    """Variance of the crosstalk c = y_hat - a y (unit-variance targets): a (1 - a), a = min(1, 1/gamma)."""
    a = pinv_signal_gain(gamma)
    return a * (1.0 - a)


def pinv_noise_gain(n: int, d: int, patterns: str = "sphere") -> float:
    """Expected output-noise gain G = ||w||^2 / d of the pseudo-inverse AM (see module docstring).

    Exact for n <= d - 2 (both pattern kinds) and for n >= d + 2 with gaussian patterns (sphere: O(1/d)
    approximation); infinite for d - 1 <= n <= d + 1 (the inverse moment does not exist).
    """
    _kind(patterns)
    if n <= d - 2:
        return n * (d - 2) / (d * (d - n - 1)) if patterns == "sphere" else n / (d - n - 1)
    if n >= d + 2:
        return d / (n - d - 1)
    return math.inf


def pinv_noise_gain_limit(gamma):
    """Large-d limit of the pinv noise gain: gamma / (1 - gamma) below capacity, 1 / (gamma - 1) above."""
    g = np.asarray(gamma, dtype=float)
    with np.errstate(divide="ignore"):
        out = np.where(g < 1, g / (1 - g), 1 / (g - 1))
    out = np.where(g == 1, np.inf, out)
    return float(out) if out.ndim == 0 else out


# -- Hebbian (correlation matrix) ----------------------------------------------------------------
def hebbian_crosstalk_variance(n: int, d: int) -> float:
    """Variance of sum_{j != i} y_j (x_i . x_j): (n - 1)/d for unit-variance targets (exact)."""
    return (n - 1) / d


def hebbian_recall_error(n: int, d: int, patterns: str = "sphere") -> float:
    """Relative recall MSE of the Hebbian AM: (n - 1)/d (sphere) or (n + 1)/d (gaussian: length noise)."""
    return (n - 1) / d if _kind(patterns) == "sphere" else (n + 1) / d


def hebbian_noise_gain(n: int, d: int) -> float:
    """Output-noise gain of the Hebbian AM: E||w||^2 / d = n / d = gamma (exact)."""
    return n / d


# -- read-outs -----------------------------------------------------------------------------------
def bit_error_rate(signal_gain, crosstalk_var):
    """P(sign(a y + c) != y) for y = +-1 and Gaussian crosstalk c of the given variance."""
    a = np.asarray(signal_gain, dtype=float)
    v = np.asarray(crosstalk_var, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(v <= 0, 0.0, norm.cdf(-a / np.sqrt(np.maximum(v, 1e-300))))
    return float(out) if out.ndim == 0 else out


def vector_cosine(signal_gain, crosstalk_var):
    """Large-m cosine between a vector recall a y + c and its target y: a / sqrt(a^2 + Var c)."""
    a = np.asarray(signal_gain, dtype=float)
    out = a / np.sqrt(a ** 2 + np.asarray(crosstalk_var, dtype=float))
    return float(out) if out.ndim == 0 else out


def predict(rule: str, n: int, d: int, patterns: str = "sphere", lr: float | None = None,
            steps: int | None = None) -> dict[str, float]:
    """All predictions for one (rule, n, d): relative_mse, signal_gain, crosstalk_var, noise_gain,
    bit_error (+-1 targets), cosine (vector targets, large m). ``sgd`` needs lr and steps (full-batch GD)."""
    gamma = n / d
    if rule == "pinv":
        a, v = pinv_signal_gain(gamma), pinv_crosstalk_variance(gamma)
        out = {"relative_mse": pinv_recall_error(gamma), "signal_gain": a, "crosstalk_var": v,
               "noise_gain": pinv_noise_gain(n, d, patterns)}
    elif rule == "hebbian":
        a, v = 1.0, hebbian_crosstalk_variance(n, d) + (0.0 if patterns == "sphere" else 2.0 / d)
        out = {"relative_mse": hebbian_recall_error(n, d, patterns), "signal_gain": a, "crosstalk_var": v,
               "noise_gain": hebbian_noise_gain(n, d)}
    elif rule == "sgd":
        if lr is None or steps is None:
            lr = 1.0 / (1.0 + math.sqrt(gamma)) ** 2 if lr is None else lr
            steps = 200 if steps is None else steps
        mse = gd_recall_error(gamma, lr, steps)
        a = gd_signal_gain(gamma, lr, steps)
        out = {"relative_mse": mse, "signal_gain": a, "crosstalk_var": max(mse - (1 - a) ** 2, 0.0),
               "noise_gain": gd_noise_gain(gamma, lr, steps)}
    else:
        raise ValueError(f"rule: {rule!r} is not allowed; choose one of: pinv, hebbian, sgd")
    out["bit_error"] = bit_error_rate(out["signal_gain"], out["crosstalk_var"])
    out["cosine"] = vector_cosine(out["signal_gain"], out["crosstalk_var"])
    return out


# -- gradient descent via Marchenko-Pastur -------------------------------------------------------
def _mp_integral(gamma: float, f, n_nodes: int = 4000) -> float:
    """Integral of f(l) against the nonzero part of the Marchenko-Pastur law of X X^T (n x n, ratio gamma,
    entries of X of variance 1/d); that part has total mass min(1, 1/gamma)."""
    lo, hi = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    # l = c + r cos(theta) removes the square-root endpoint singularities: dl sqrt((hi-l)(l-lo)) = r^2 sin^2.
    theta = (np.arange(n_nodes) + 0.5) * math.pi / n_nodes
    c, r = (lo + hi) / 2, (hi - lo) / 2
    lam = c + r * np.cos(theta)
    weight = r ** 2 * np.sin(theta) ** 2 / (2 * math.pi * gamma * lam) * (math.pi / n_nodes)
    return float(np.sum(weight * f(lam)))


def mp_zero_mass(gamma: float) -> float:
    return max(0.0, 1.0 - 1.0 / gamma)


def gd_recall_error(gamma: float, lr: float, steps: int) -> float:
    """Relative recall MSE after `steps` full-batch GD steps of size lr (large-d, Marchenko-Pastur)."""
    return mp_zero_mass(gamma) + _mp_integral(gamma, lambda l: (1 - lr * l) ** (2 * steps))


def gd_signal_gain(gamma: float, lr: float, steps: int) -> float:
    """Slope of GD recalls on targets: (1/n) tr(I - (I - lr X X^T)^t)."""
    return _mp_integral(gamma, lambda l: 1 - (1 - lr * l) ** steps)


def gd_noise_gain(gamma: float, lr: float, steps: int) -> float:
    """Output-noise gain ||w||^2 / d after `steps` GD steps (large-d, Marchenko-Pastur)."""
    return gamma * _mp_integral(gamma, lambda l: (1 - (1 - lr * l) ** steps) ** 2 / l)
