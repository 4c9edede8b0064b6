"""weight-decay-sparsity: the nonparametric baselines against exact answers, the study's checks on
synthetic curves (pass on the published shape, fail without it), and one tiny end-to-end run."""

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.measure import baselines1d as bl
from overparam.studies import base
from overparam.studies import weight_decay_sparsity as wds
from overparam.studies.base import RunContext


def _cfg(**sets):
    return resolve_config(wds.WeightDecaySparsityConfig, wds.PRESETS, "quick", sets=sets)


# ------------------------------------------------------------------ trend filtering

def _kkt_violation(y, fit, lam, k, x=None):
    """Largest violation of the trend-filtering KKT conditions at `fit`, with the dual recovered from
    D^T u = y - fit (D^T has full column rank): |u| <= lam, u_i = lam sign((D b)_i) where (D b)_i != 0."""
    D = bl.difference_matrix(len(y), k + 1, x)
    u = np.linalg.lstsq(D.T, y - fit, rcond=None)[0]
    resid = np.abs(D.T @ u - (y - fit)).max()           # y - fit must lie in the row space of D
    Db = D @ fit
    nz = np.abs(Db) > 1e-8
    sign_gap = np.abs(u[nz] - lam * np.sign(Db[nz])).max() if nz.any() else 0.0
    return max(resid, np.abs(u).max() - lam, sign_gap)


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.05, 0.3, 1.0])
def test_trend_filter_satisfies_kkt_and_beats_perturbations(k, lam):
    rng = np.random.default_rng(k * 10 + int(lam * 100))
    y = np.cumsum(rng.standard_normal(12)) * 0.3
    res = bl.trend_filter(y, lam, k)
    assert _kkt_violation(y, res.fit, lam, k) < 1e-8
    best = bl.trend_filter_objective(y, res.fit, lam, k)
    for _ in range(200):  # a convex objective: no nearby point may be lower
        b = res.fit + 1e-3 * rng.standard_normal(12)
        assert bl.trend_filter_objective(y, b, lam, k) >= best - 1e-12


@pytest.mark.parametrize("k", [0, 1])
def test_trend_filter_matches_brute_force_dual(k):
    """BVLS (an exact active-set method) on the same dual box QP gives the same fit."""
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(3)
    y = np.sin(np.linspace(0, 3, 15)) + 0.2 * rng.standard_normal(15)
    D = bl.difference_matrix(15, k + 1)
    for lam in (0.02, 0.2, 0.8):
        u = lsq_linear(D.T, y, bounds=(-lam, lam), method="bvls", tol=1e-14).x
        np.testing.assert_allclose(bl.trend_filter(y, lam, k).fit, y - D.T @ u, atol=1e-8)


def test_fused_lasso_tiny_case_by_hand():
    """k=0, y = (0, 0, 3, 3), lam = 0.5: the jump shrinks by lam/2 on each side -> (0.25, 0.25, 2.75, 2.75)."""
    res = bl.trend_filter(np.array([0.0, 0.0, 3.0, 3.0]), 0.5, 0)
    np.testing.assert_allclose(res.fit, [0.25, 0.25, 2.75, 2.75], atol=1e-10)
    assert res.knots == 1 and res.df == 2


@pytest.mark.parametrize("k", [0, 1, 2])
def test_trend_filter_limits(k):
    rng = np.random.default_rng(k)
    x = np.linspace(0, 1, 20)
    y = np.cos(4 * x) + 0.1 * rng.standard_normal(20)
    np.testing.assert_allclose(bl.trend_filter(y, 0.0, k).fit, y)
    np.testing.assert_allclose(bl.trend_filter(y, 1e-9, k).fit, y, atol=1e-7)
    lam_max = bl.trend_filter_lambda_max(y, k)
    poly = np.polyval(np.polyfit(x, y, k), x)
    for lam in (1.0001 * lam_max, 10 * lam_max):
        res = bl.trend_filter(y, lam, k)
        np.testing.assert_allclose(res.fit, poly, atol=1e-8)
        assert res.knots == 0 and res.df == k + 1
    assert bl.trend_filter(y, 0.5 * lam_max, k).knots >= 1


def test_trend_filter_df_is_nullity_of_reduced_difference_operator():
    rng = np.random.default_rng(5)
    y = np.cumsum(rng.standard_normal(30))
    for k in (0, 1, 2):
        res = bl.trend_filter(y, 0.5, k)
        D = bl.difference_matrix(30, k + 1)
        boundary = np.abs(res.dual) >= 0.5 * (1 - 1e-7)
        nullity = 30 - np.linalg.matrix_rank(D[~boundary])
        assert res.df == nullity == res.knots + k + 1


def test_difference_matrix_annihilates_polynomials_on_uneven_designs():
    x = np.sort(np.random.default_rng(0).uniform(0, 1, 15))
    for order in (1, 2, 3):
        D = bl.difference_matrix(15, order, x)
        assert D.shape == (15 - order, 15)
        for deg in range(order):
            assert np.abs(D @ x ** deg).max() < 1e-8
        assert np.abs(D @ x ** order).min() > 1e-6
    np.testing.assert_allclose(bl.difference_matrix(5, 2), np.array([[1, -2, 1, 0, 0], [0, 1, -2, 1, 0],
                                                                     [0, 0, 1, -2, 1]], float))


def test_trend_filter_uneven_design_kkt():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 1, 25))
    y = np.abs(x - 0.5) + 0.05 * rng.standard_normal(25)
    res = bl.trend_filter(y, 0.01, 1, x)
    assert _kkt_violation(y, res.fit, 0.01, 1, x) < 1e-8


# ------------------------------------------------------------------ linear smoothers, wavelets, df

def test_spline_smoother_reproduces_scipy_fit_and_df_falls_with_penalty():
    from scipy.interpolate import make_smoothing_spline

    x = np.linspace(0, 1, 40)
    y = np.sin(6 * x) + 0.1 * np.random.default_rng(0).standard_normal(40)
    dfs = []
    for lam in (1e-8, 1e-5, 1e-2):
        S = bl.smoothing_spline_smoother(x, lam)
        np.testing.assert_allclose(S @ y, make_smoothing_spline(x, y, lam=lam)(x), atol=1e-9)
        dfs.append(bl.smoother_df(S))
    assert dfs[0] > dfs[1] > dfs[2] > 2 - 1e-6


def test_krr_smoothers_equal_sklearn_and_closed_form():
    x = np.linspace(0, 1, 30)
    alphas = [1e-3, 1e-1]
    fast = bl.krr_smoothers(x, alphas, 50.0)
    for alpha, S in zip(alphas, fast):
        np.testing.assert_allclose(S, bl.krr_smoother(x, alpha, 50.0), atol=1e-8)
        K = np.exp(-50.0 * (x[:, None] - x[None]) ** 2)
        np.testing.assert_allclose(S, K @ np.linalg.inv(K + alpha * np.eye(30)), atol=1e-8)


def test_wavelet_denoising_limits():
    import pywt

    y = np.random.default_rng(0).standard_normal(64)
    fit, df = bl.wavelet_denoise(y, 0.0, level=3)
    np.testing.assert_allclose(fit, y, atol=1e-10)
    assert df == 64
    fit, df = bl.wavelet_denoise(y, 1e6, level=3)
    assert df == 8                                    # only the 64 / 2**3 approximation coefficients survive
    approx = pywt.wavedec(y, "sym8", mode="periodization", level=3)
    proj = pywt.waverec([approx[0]] + [np.zeros_like(c) for c in approx[1:]], "sym8", mode="periodization")
    np.testing.assert_allclose(fit, proj, atol=1e-10)
    with pytest.raises(ValueError):
        bl.wavelet_denoise(np.zeros(60), 0.1, level=3)


def test_monte_carlo_dof_recovers_trace_of_a_linear_smoother():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 20)
    S = bl.smoothing_spline_smoother(x, 1e-4)
    f, sigma = np.sin(5 * x), 0.3
    noise = sigma * rng.standard_normal((4000, 20))
    est = bl.monte_carlo_dof((f + noise) @ S.T, noise, sigma)
    assert abs(est - np.trace(S)) < 0.05 * np.trace(S) + 0.2
    with pytest.raises(ValueError):
        bl.monte_carlo_dof(np.zeros((1, 5)), np.zeros((1, 5)), 1.0)


# ------------------------------------------------------------------ study checks on synthetic curves

def _curves(parallel, mlp, spline=0.005, krr=0.0052, wavelet=0.0035, tf=0.004):
    mk = lambda best: {"df": [10, 30, 60], "mse": [2 * best, best, 1.5 * best], "group": ["g"] * 3}  # noqa: E731
    return {"doppler": {"parallel": mk(parallel), "mlp": mk(mlp), "spline": mk(spline), "krr": mk(krr),
                        "wavelet": mk(wavelet), "trend_filter": mk(tf)}}


def _summ(cfg, parallel, mlp, active_row, frac_row, **kw):
    active = {"doppler": np.array([active_row, active_row])}
    resnet = {"lambdas": cfg.resnet_lambdas, "fraction": np.array([frac_row])}
    return wds.summarize(cfg, _curves(parallel, mlp, **kw), active, resnet, {}, 100, 100)


def _verdicts(result):
    return {c.name.split(" (")[0]: c.passed for c in result.checks}


def test_checks_pass_on_the_published_shape_and_fail_without_it():
    cfg = _cfg()
    n_lam, n_res = len(cfg.lambdas), len(cfg.resnet_lambdas)
    good = _summ(cfg, 0.0038, 0.0055, np.linspace(16, 2, n_lam), np.linspace(1, 0.2, n_res))
    assert all(c.passed for c in good.checks), [c for c in good.checks if not c.passed]
    bad = _summ(cfg, 0.006, 0.005, np.full(n_lam, 16.0), np.linspace(0.2, 1, n_res), tf=0.006, wavelet=0.007)
    assert not any(c.passed for c in bad.checks), [c for c in bad.checks if c.passed]
    names = set(_verdicts(good))
    assert {"active subnetworks fall as weight decay grows", "parallel net beats the smoothing spline on Doppler",
            "ResNet: fraction of active residual blocks falls with weight decay"} <= names


def test_decreasing_trend_needs_a_falling_rank_correlation():
    lams = [1e-5, 1e-4, 1e-3, 1e-2]
    assert wds.decreasing_trend(lams, [16, 10, 4, 1])[0]
    assert wds.decreasing_trend(lams, [16, 16, 5, 1])[0]
    assert wds.decreasing_trend(lams, [1, 1, 1, 0.17])[0]          # a step down: monotone, rho only -0.77
    assert wds.decreasing_trend(lams + [0.1], [16, 12, 13, 4, 2])[0]  # a wiggle, rho -0.9
    assert not wds.decreasing_trend(lams, [16, 4, 14, 15])[0]       # ends lower but no trend
    assert not wds.decreasing_trend(lams, [16, 16, 16, 16])[0]
    assert not wds.decreasing_trend(lams, [4, 10, 2, 16])[0]


def test_matched_mlp_width_is_closest_in_parameter_count():
    from overparam.models.parallel import ParallelNet

    W = wds.matched_mlp_width(16, 4, 8)
    target = 16 * ParallelNet(1, 16, 4, 8).parameters_per_subnetwork()
    gap = lambda w: abs(ParallelNet(1, 1, 4, w).parameters_per_subnetwork() - target)  # noqa: E731
    assert gap(W) <= gap(W - 1) and gap(W) <= gap(W + 1)


def test_config_validation():
    with pytest.raises(ConfigError):
        _cfg(lambdas="1e-3,1e-4,1e-5")
    with pytest.raises(ConfigError):
        _cfg(targets="doppler,doppler")
    assert set(base.REGISTRY["weight-decay-sparsity"].presets) >= {"quick", "paper"}


def test_tiny_end_to_end_run():
    cfg = _cfg(**{
        "n_train": 64, "repeats": 2, "lambdas": "1e-4,1e-2,1e-1", "M": 4, "L": 3, "w": 4, "steps": 30,
        "resnet_width": 4, "resnet_blocks": 3, "resnet_lambdas": "1e-3,1e-1", "resnet_steps": 30,
        "tuning_points": 3, "tf_orders": "0,1"})
    res = wds.run(cfg, RunContext())
    assert len(res.checks) == 5
    for m in wds.METHODS:
        assert np.isfinite(res.metrics[f"doppler_best_mse_{m}"])
    assert res.arrays["doppler_active"].shape == (2, 3)
    assert set(res.figures) == {"mse_vs_df", "sparsity", "fits"}
