"""Nonparametric 1-D regression baselines, each with its degrees of freedom.

- Smoothing spline (``scipy.interpolate.make_smoothing_spline``) and kernel ridge regression
  (``sklearn.kernel_ridge.KernelRidge``, RBF kernel) are linear smoothers ``yhat = S y``; their smoother
  matrix S is computed exactly (by fitting the n unit vectors at once) and ``df = trace(S)``.
- Wavelet denoising (PyWavelets, orthonormal periodized transform, soft thresholding of the detail
  coefficients, approximation coefficients kept): ``df`` = number of nonzero coefficients, which is
  Stein's unbiased degrees of freedom of soft thresholding in an orthonormal basis.
- Trend filtering of order k (Kim et al. 2009; Tibshirani 2014):
  ``min_b 1/2 ||y - b||^2 + lam ||D^(k+1) b||_1``, solved exactly through its dual, the box-constrained
  least squares ``min_u ||y - D^T u||^2 s.t. |u|_inf <= lam`` (``scipy.optimize.lsq_linear``, BVLS),
  with ``b = y - D^T u``. ``df`` = (number of dual coordinates on the box boundary, i.e. knots) + k + 1,
  the unbiased estimate of Tibshirani & Taylor (2011, 2012): the nullity of D with the boundary rows
  removed, which for the full-row-rank difference operator is exactly |boundary| + k + 1.
- :func:`monte_carlo_dof` estimates ``df = sum_i Cov(yhat_i, y_i) / sigma^2`` (Efron 2004) of any
  fitting procedure from repeated noise draws on one fixed design.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------------------------------- trend filtering

def difference_matrix(n: int, order: int, x: np.ndarray | None = None) -> np.ndarray:
    """The discrete difference operator D^(order), shape (n - order, n).

    ``x=None``: equally spaced inputs, plain differences (rows of D^(1) are (-1, 1)). With sorted,
    distinct ``x``: Tibshirani's (2014) operator for uneven designs,
    ``D^(k+1) = D^(1) diag(k / (x_{i+k} - x_i)) D^(k)``.
    """
    if order < 1 or order >= n:
        raise ValueError(f"order must be in [1, n-1], got {order} for n={n}")
    D1 = lambda m: np.diff(np.eye(m), axis=0)  # noqa: E731  (m-1, m)
    D = D1(n)
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (n,) or np.any(np.diff(x) <= 0):
            raise ValueError("x must be strictly increasing with n entries")
    for k in range(1, order):
        if x is not None:
            D = (k / (x[k:] - x[:-k]))[:, None] * D
        D = D1(n - k) @ D
    return D


@dataclass
class TrendFilterFit:
    fit: np.ndarray        # (n,) the estimate b
    dual: np.ndarray       # (n - k - 1,) the dual solution u, |u| <= lam
    knots: int             # dual coordinates on the boundary |u_i| = lam (the changes in the k-th derivative)
    df: int                # knots + k + 1


def trend_filter(y: np.ndarray, lam: float, k: int = 1, x: np.ndarray | None = None) -> TrendFilterFit:
    """Trend filtering of order k at penalty lam (see the module docstring). k=0 is the fused lasso.

    Two stages: a primal-dual interior-point method on the dual (Kim, Koh, Boyd & Gorinevsky 2009,
    "l1 trend filtering") to a duality gap of ~1e-10, then an exact active-set polish: fix the
    coordinates the interior point puts (nearly) on the box boundary at +-lam, solve the remaining
    unconstrained least squares exactly, and accept the result only if it satisfies the KKT
    conditions (dual feasibility |u| <= lam, and sign(D b)_i = u_i / lam wherever D b != 0). If no
    candidate boundary set verifies (should not happen), BVLS (exact, slower) solves the dual.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if k < 0 or k + 1 >= n:
        raise ValueError(f"order k must be in [0, n-2], got {k} for n={n}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    D = difference_matrix(n, k + 1, x)
    if lam == 0:
        return TrendFilterFit(y.copy(), np.zeros(len(D)), len(D), n)
    scale = max(float(np.abs(y).max()), 1e-300)
    u_ip = _tf_dual_interior_point(D, y / scale, lam / scale) * scale
    for delta in (1e-9, 1e-7, 1e-5, 1e-3, 1e-2):
        boundary = np.abs(u_ip) >= lam * (1 - delta)
        u = _tf_polish(D, y, lam, boundary, np.sign(u_ip))
        if u is not None and _tf_kkt_ok(D, y, lam, u, boundary):
            return TrendFilterFit(y - D.T @ u, u, int(boundary.sum()), int(boundary.sum()) + k + 1)
    from scipy.optimize import lsq_linear

    u = np.clip(lsq_linear(D.T, y, bounds=(-lam, lam), method="bvls", tol=1e-12).x, -lam, lam)
    knots = int(np.sum(np.abs(u) >= lam * (1 - 1e-7)))
    return TrendFilterFit(y - D.T @ u, u, knots, knots + k + 1)


def _tf_polish(D, y, lam, boundary, sign) -> np.ndarray | None:
    u = np.zeros(len(D))
    u[boundary] = lam * sign[boundary]
    free = ~boundary
    if free.any():
        rhs = y - D[boundary].T @ u[boundary]
        u[free] = np.linalg.lstsq(D[free].T, rhs, rcond=None)[0]
    return u


def _tf_kkt_ok(D, y, lam, u, boundary, tol: float = 1e-9) -> bool:
    """KKT of the primal at b = y - D^T u: |u| <= lam; on the boundary, (D b)_i u_i >= 0; off it, D b = 0."""
    if np.any(np.abs(u) > lam * (1 + tol)):
        return False
    Db = D @ (y - D.T @ u)
    size = tol * max(1.0, float(np.abs(y).max()))
    return bool(np.all(Db[boundary] * np.sign(u[boundary]) >= -size) and np.all(np.abs(Db[~boundary]) <= size))


def _tf_dual_interior_point(D, y, lam, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
    """min_u 1/2 ||D^T u||^2 - (D y)^T u  s.t. -lam <= u <= lam  (l1tf's primal-dual interior point)."""
    from scipy.linalg import solveh_banded

    m = len(D)
    DDT, Dy = D @ D.T, D @ y
    bw = int(np.max(np.nonzero(DDT[0])[0]))          # DD^T is banded: bandwidth k + 1
    bands = np.zeros((bw + 1, m))                     # upper banded storage for solveh_banded
    for j in range(bw + 1):
        bands[bw - j, j:] = np.diagonal(DDT, j)

    def solve(extra_diag, rhs):
        ab = bands.copy()
        ab[bw] += extra_diag
        return solveh_banded(ab, rhs)

    z, mu1, mu2 = np.zeros(m), np.ones(m), np.ones(m)
    f1, f2 = z - lam, -z - lam
    t, step = 1e-10, np.inf
    for _ in range(max_iter):
        DTz = D.T @ z
        DDTz = D @ DTz
        w = Dy - (mu1 - mu2)
        pobj1 = 0.5 * w @ solve(0.0, w) + lam * np.sum(mu1 + mu2)
        pobj2 = 0.5 * DTz @ DTz + lam * np.abs(Dy - DDTz).sum()
        dobj = -0.5 * DTz @ DTz + Dy @ z
        gap = min(pobj1, pobj2) - dobj
        if gap <= tol * max(1.0, abs(dobj)):
            break
        if step >= 0.2:
            t = max(2 * m * 2.0 / gap, 1.2 * t)
        rz = DDTz - w
        r = -DDTz + Dy + (1 / t) / f1 - (1 / t) / f2
        dz = solve(-(mu1 / f1 + mu2 / f2), r)
        dmu1 = -(mu1 + ((1 / t) + dz * mu1) / f1)
        dmu2 = -(mu2 + ((1 / t) - dz * mu2) / f2)
        residual = np.linalg.norm(np.concatenate([rz, -mu1 * f1 - 1 / t, -mu2 * f2 - 1 / t]))
        step = 1.0
        for dmu, mu in ((dmu1, mu1), (dmu2, mu2)):
            neg = dmu < 0
            if neg.any():
                step = min(step, 0.99 * float(np.min(-mu[neg] / dmu[neg])))
        for _ls in range(40):
            nz, nmu1, nmu2 = z + step * dz, mu1 + step * dmu1, mu2 + step * dmu2
            nf1, nf2 = nz - lam, -nz - lam
            new_res = np.linalg.norm(np.concatenate([DDT @ nz - Dy + nmu1 - nmu2, -nmu1 * nf1 - 1 / t,
                                                     -nmu2 * nf2 - 1 / t]))
            if max(nf1.max(), nf2.max()) < 0 and new_res <= (1 - 0.01 * step) * residual:
                break
            step *= 0.5
        z, mu1, mu2, f1, f2 = nz, nmu1, nmu2, nf1, nf2
    return z


def trend_filter_objective(y: np.ndarray, b: np.ndarray, lam: float, k: int, x: np.ndarray | None = None) -> float:
    D = difference_matrix(len(y), k + 1, x)
    return float(0.5 * np.sum((y - b) ** 2) + lam * np.abs(D @ b).sum())


def trend_filter_lambda_max(y: np.ndarray, k: int, x: np.ndarray | None = None) -> float:
    """Smallest lam at which the fit is the degree-k polynomial fit: ||(D D^T)^-1 D y||_inf."""
    D = difference_matrix(len(y), k + 1, x)
    return float(np.abs(np.linalg.lstsq(D.T, np.asarray(y, dtype=np.float64), rcond=None)[0]).max())


# ----------------------------------------------------------------------------------------- linear smoothers

def smoothing_spline_smoother(x: np.ndarray, lam: float) -> np.ndarray:
    """Exact smoother matrix S (n, n) of the cubic smoothing spline with penalty lam; fit = S @ y."""
    from scipy.interpolate import make_smoothing_spline

    x = np.asarray(x, dtype=np.float64)
    spline = make_smoothing_spline(x, np.eye(len(x)), lam=lam)
    return spline(x)


def krr_smoother(x: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """Exact smoother matrix of RBF kernel ridge regression (sklearn KernelRidge, no intercept):
    S = K (K + alpha I)^-1 with K_ij = exp(-gamma (x_i - x_j)^2)."""
    from sklearn.kernel_ridge import KernelRidge

    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    model = KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma).fit(X, np.eye(len(X)))
    return model.predict(X)


def krr_smoothers(x: np.ndarray, alphas, gamma: float) -> list[np.ndarray]:
    """:func:`krr_smoother` for many alphas from one eigendecomposition of K: S = U diag(l/(l+alpha)) U^T
    (equal to sklearn's up to rounding; tested)."""
    from sklearn.metrics.pairwise import rbf_kernel

    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    evals, U = np.linalg.eigh(rbf_kernel(X, gamma=gamma))
    evals = np.clip(evals, 0.0, None)
    return [(U * (evals / (evals + alpha))) @ U.T for alpha in alphas]


def smoother_df(S: np.ndarray) -> float:
    return float(np.trace(S))


# ----------------------------------------------------------------------------------------------- wavelets

def wavelet_denoise(y: np.ndarray, threshold: float, wavelet: str = "sym8",
                    level: int | None = None) -> tuple[np.ndarray, int]:
    """Soft-threshold the detail coefficients of an orthonormal (periodized) wavelet transform.

    Returns (fit, df) with df the number of nonzero coefficients (approximation coefficients always
    count). Needs len(y) to be a multiple of 2**level for the transform to be orthonormal.
    """
    import pywt

    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if level is None:
        level = pywt.dwt_max_level(n, pywt.Wavelet(wavelet).dec_len)
    if n % (2 ** level):
        raise ValueError(f"len(y)={n} must be a multiple of 2**level={2 ** level} (orthonormal transform)")
    coeffs = pywt.wavedec(y, wavelet, mode="periodization", level=level)
    kept = [coeffs[0]] + [pywt.threshold(c, threshold, mode="soft") for c in coeffs[1:]]
    df = int(sum(np.count_nonzero(c) for c in kept))
    return pywt.waverec(kept, wavelet, mode="periodization")[:n], df


# ------------------------------------------------------------------------------------------ Monte Carlo df

def monte_carlo_dof(fits: np.ndarray, noise: np.ndarray, sigma: float) -> float:
    """Efron's df = sum_i Cov(yhat_i, y_i) / sigma^2 from R repeats on one design.

    fits, noise: (R, n): the fitted values and the noise y - f(x) of each repeat. Uses the unbiased
    sample covariance over repeats (R >= 2).
    """
    fits, noise = np.asarray(fits, dtype=np.float64), np.asarray(noise, dtype=np.float64)
    R = len(fits)
    if R < 2 or fits.shape != noise.shape:
        raise ValueError("need >= 2 repeats and fits/noise of one shape (R, n)")
    cov = ((fits - fits.mean(0)) * (noise - noise.mean(0))).sum(0) / (R - 1)
    return float(cov.sum() / sigma ** 2)
