"""LinearAM against its closed forms (overparam.memory.theory), on large random draws."""

import math

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from overparam.memory import LinearAM, cosine_to_targets, random_patterns, random_targets, recall_stats, theory


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small LAPACK calls thrash when BLAS threads compete for 2 busy cores (100x slower)
    with threadpool_limits(limits=1):
        yield


def test_normalize_gives_unit_length_inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 32)) * rng.uniform(0.1, 10, size=(50, 1))
    am = LinearAM(32, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(am.prepare(X), axis=1), 1.0, atol=1e-12)
    raw = LinearAM(32, normalize=False).prepare(X)
    np.testing.assert_array_equal(raw, X)
    # recall of a rescaled stored pattern is the same as of the pattern itself when normalizing
    y = random_targets(50, seed=1)
    am.store(X[:20], y[:20])
    np.testing.assert_allclose(am.recall(7.0 * X[:20]), y[:20], atol=1e-9)


@pytest.mark.parametrize("m", [None, 5])
@pytest.mark.parametrize("n", [1, 40, 100, 127])
def test_pinv_recall_exact_below_capacity(n, m):
    d = 128
    X, Y = random_patterns(n, d, seed=n), random_targets(n, m, seed=n + 1, kind="gaussian")
    Yh = LinearAM(d, rule="pinv").store(X, Y).recall(X)
    assert Yh.shape == Y.shape
    np.testing.assert_allclose(Yh, Y, atol=1e-8)


def test_sgd_converges_to_pinv_below_capacity():
    d, n = 64, 16
    X, y = random_patterns(n, d, seed=3), random_targets(n, seed=4)
    sgd = LinearAM(d, rule="sgd", epochs=300).store(X, y)
    pinv = LinearAM(d, rule="pinv").store(X, y)
    np.testing.assert_allclose(sgd.W, pinv.W, atol=1e-8)   # min-norm solution, since W starts at 0
    mini = LinearAM(d, rule="sgd", epochs=200, batch_size=4, lr=0.05, seed=1).store(X, y)
    assert np.max(np.abs(mini.recall(X) - y)) < 1e-3


@pytest.mark.parametrize("gamma", [1.25, 2.0])
def test_pinv_over_capacity_error_matches_one_minus_one_over_gamma(gamma):
    d, trials = 128, 40   # ||(I-P)y||^2 has relative sd sqrt(2/(n-d)) per draw
    n = int(gamma * d)
    mses, slopes, cross = [], [], []
    for t in range(trials):
        X, y = random_patterns(n, d, seed=t), random_targets(n, seed=100 + t)
        s = recall_stats(LinearAM(d, rule="pinv").store(X, y), X, y)
        mses.append(s["relative_mse"]), slopes.append(s["signal_gain"]), cross.append(s["crosstalk_var"])
    assert np.mean(mses) == pytest.approx(theory.pinv_recall_error(gamma), rel=0.08)
    assert np.mean(slopes) == pytest.approx(theory.pinv_signal_gain(gamma), rel=0.03)
    assert np.mean(cross) == pytest.approx(theory.pinv_crosstalk_variance(gamma), rel=0.08)


@pytest.mark.parametrize("patterns", ["sphere", "gaussian"])
def test_hebbian_crosstalk_variance_matches_formula(patterns):
    d, n, trials = 200, 150, 30
    errs, cross = [], []
    for t in range(trials):
        X, y = random_patterns(n, d, seed=t, kind=patterns), random_targets(n, seed=500 + t)
        am = LinearAM(d, rule="hebbian", normalize=False).store(X, y)
        G = X @ X.T
        ct = (G - np.diag(np.diag(G))) @ y          # sum_{j != i} y_j x_i.x_j
        cross.append(ct)
        errs.append(am.recall(X) - y)
    cross, errs = np.concatenate(cross), np.concatenate(errs)
    # 30 * 150 = 4500 draws: the sample variance is within ~5% (2 sd) of the truth
    assert np.var(cross) == pytest.approx(theory.hebbian_crosstalk_variance(n, d), rel=0.07)
    assert np.mean(errs ** 2) == pytest.approx(theory.hebbian_recall_error(n, d, patterns), rel=0.07)
    if patterns == "gaussian":   # the two differ by the length fluctuation 2/d
        assert theory.hebbian_recall_error(n, d, "gaussian") - theory.hebbian_crosstalk_variance(n, d) == \
            pytest.approx(2 / d)


def _measured_gain(am, X, y, sigma, seed):
    """Output noise-to-signal ratio over the input one, from noisy recalls (not from ||w||)."""
    clean = am.recall(X)
    noisy = np.stack([am.recall(X, noise_std=sigma, seed=seed + k) for k in range(4)])
    out_noise = np.mean((noisy - clean) ** 2)
    in_power = np.mean(np.sum(am.prepare(X) ** 2, axis=1))
    return (out_noise / np.mean(y ** 2)) / (X.shape[1] * sigma ** 2 / in_power)


@pytest.mark.parametrize("patterns,n,d", [("sphere", 32, 128), ("sphere", 96, 128), ("gaussian", 64, 128),
                                          ("gaussian", 256, 128)])
def test_pinv_noise_gain_formula_vs_simulation(patterns, n, d):
    gains = []
    for t in range(40):
        X, y = random_patterns(n, d, seed=t, kind=patterns), random_targets(n, seed=900 + t)
        am = LinearAM(d, rule="pinv", normalize=False).store(X, y)
        gains.append(_measured_gain(am, X, y, 0.01, seed=7000 + 10 * t))
        # the gain is ||w||^2 / d up to the noise draw
    assert np.mean(gains) == pytest.approx(theory.pinv_noise_gain(n, d, patterns), rel=0.1)


def test_noise_gain_exact_sphere_formula_differs_from_gaussian():
    # the unit-length correction is real: (d-2)/d, measurable at small d
    d, n = 24, 12
    ws = []
    for t in range(4000):
        X, y = random_patterns(n, d, seed=t), random_targets(n, seed=10**6 + t)
        ws.append(LinearAM(d).store(X, y).weight_norm2 / d)
    assert np.mean(ws) == pytest.approx(theory.pinv_noise_gain(n, d, "sphere"), rel=0.03)
    assert abs(np.mean(ws) - theory.pinv_noise_gain(n, d, "gaussian")) > 0.05


def test_hebbian_noise_gain_is_gamma():
    d, n = 128, 64
    gains = [_measured_gain(LinearAM(d, rule="hebbian").store(X, y), X, y, 0.01, seed=10**5 + 10 * t)
             for t in range(30) for X, y in [(random_patterns(n, d, seed=t), random_targets(n, seed=50 + t))]]
    # (noise seeds must differ from pattern seeds: default_rng(t) would replay the patterns)
    assert np.mean(gains) == pytest.approx(theory.hebbian_noise_gain(n, d), rel=0.06)


def test_gd_theory_matches_simulation_at_finite_steps():
    d, steps = 256, 30
    for gamma in (0.5, 1.0, 1.5):
        n = int(gamma * d)
        lr = 1.0 / (1 + math.sqrt(gamma)) ** 2
        # 64 target columns average out the targets' projections on the eigen-directions
        X, y = random_patterns(n, d, seed=1), random_targets(n, 64, seed=2)
        am = LinearAM(d, rule="sgd", lr=lr, epochs=steps).store(X, y)
        s = recall_stats(am, X, y)
        assert s["relative_mse"] == pytest.approx(theory.gd_recall_error(gamma, lr, steps), rel=0.1, abs=2e-3)
        assert am.weight_norm2 / (64 * d) == pytest.approx(theory.gd_noise_gain(gamma, lr, steps), rel=0.1)


@pytest.mark.parametrize("rule", ["pinv", "hebbian"])
def test_over_capacity_crosstalk_is_close_to_gaussian(rule):
    # +-1 targets: the targets are far from Gaussian, the crosstalk c = y_hat - a y is a sum of many terms.
    d, n = 128, 256
    cs = []
    for t in range(8):
        X, y = random_patterns(n, d, seed=t), random_targets(n, seed=40 + t)
        am = LinearAM(d, rule=rule).store(X, y)
        yh = am.recall(X)
        a = np.sum(yh * y) / np.sum(y * y)
        cs.append(yh - a * y)
    c = np.concatenate(cs)
    ks = stats.kstest((c - c.mean()) / c.std(), "norm").statistic
    assert ks < 0.03, ks
    # the raw recalls are bimodal (+-a plus noise): clearly not Gaussian, so the test above can fail
    yh_ks = stats.kstest(yh / yh.std(), "norm").statistic
    assert yh_ks > 0.05 or rule == "hebbian"


def test_vector_recall_cosine_and_bit_errors_over_capacity():
    d, gamma, m = 128, 2.0, 200
    n = int(gamma * d)
    X, Y = random_patterns(n, d, seed=0), random_targets(n, m, seed=1)
    for rule in ("pinv", "hebbian"):
        Yh = LinearAM(d, rule=rule).store(X, Y).recall(X)
        pred = theory.predict(rule, n, d)
        assert np.mean(cosine_to_targets(Yh, Y)) == pytest.approx(pred["cosine"], abs=0.02)
        assert np.mean(np.sign(Yh) != Y) == pytest.approx(pred["bit_error"], abs=0.015)


def test_input_validation():
    with pytest.raises(ValueError, match="rule"):
        LinearAM(8, rule="oja")
    with pytest.raises(ValueError, match="X: expected shape"):
        LinearAM(8).store(np.zeros((3, 7)), np.zeros(3))
    with pytest.raises(ValueError, match="Y: expected shape"):
        LinearAM(8).store(np.ones((3, 8)), np.zeros(4))
    with pytest.raises(RuntimeError, match="store"):
        LinearAM(8).recall(np.ones((1, 8)))
    assert theory.pinv_noise_gain(127, 128) == math.inf
