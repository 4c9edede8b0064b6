"""The double-descent family: epoch-wise, sample-wise and random-features studies.

Unit tests drive each study's summary on synthetic curves, so every check is shown to pass on the
published shape and to fail without it; one tiny real run per study exercises run() end to end.
"""

import numpy as np
import pytest
import torch

from overparam.config import ConfigError, resolve_config
from overparam.studies import base
from overparam.studies import epoch_double_descent as edd
from overparam.studies import random_features as rf
from overparam.studies import sample_double_descent as sdd
from overparam.studies.base import RunContext


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_studies_are_registered_with_both_presets():
    for name in ("epoch-double-descent", "sample-double-descent", "random-features"):
        assert set(base.REGISTRY[name].presets) >= {"quick", "paper"}


# ---------------------------------------------------------------- random features: ground truth

@pytest.mark.parametrize("N", [5, 12, 30])
def test_min_norm_solution_equals_pinv_and_ridge_equals_normal_equations(N):
    g = torch.Generator().manual_seed(N)
    Phi = torch.randn(12, N, generator=g, dtype=torch.float64)
    Y = torch.randn(12, 3, generator=g, dtype=torch.float64)
    w0, w1 = rf.ridge_solutions(Phi, Y, [0.0, 0.1])
    torch.testing.assert_close(w0, torch.linalg.pinv(Phi) @ Y, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(w1, rf.ridge_normal_equations(Phi, Y, 0.1), rtol=1e-8, atol=1e-10)
    if N >= 12:  # past N = n the minimum-norm solution interpolates
        torch.testing.assert_close(Phi @ w0, Y, rtol=1e-7, atol=1e-8)


def test_min_norm_on_rank_deficient_features_matches_pinv():
    g = torch.Generator().manual_seed(0)
    Phi = torch.randn(10, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 20, generator=g, dtype=torch.float64)
    Y = torch.randn(10, 2, generator=g, dtype=torch.float64)
    (w0,) = rf.ridge_solutions(Phi, Y, [0.0])
    torch.testing.assert_close(w0, torch.linalg.pinv(Phi) @ Y, rtol=1e-6, atol=1e-8)


def test_random_features_are_seeded_and_scaled():
    X = torch.randn(50, 6, dtype=torch.float64)
    for kind in rf.FEATURES:
        a, b = rf.random_features(kind, X, 2000, 3, 2.0), rf.random_features(kind, X, 2000, 3, 2.0)
        assert torch.equal(a, b) and a.shape == (50, 2000)
    # Fourier features approximate the Gaussian kernel exp(-|x-x'|^2 / (2 sigma^2))
    F = rf.random_features("fourier", X, 20000, 1, 3.0)
    K = torch.exp(-torch.cdist(X, X) ** 2 / (2 * 9.0))
    assert (F @ F.T - K).abs().max() < 0.05


def _rf_cfg(**sets):
    return resolve_config(rf.RandomFeaturesConfig, rf.PRESETS, "quick", sets=sets)


def _rf_curves(cfg, risk0, norm0, err0, risk_big):
    """(1 dataset, 1 feature, 4 quantities, ridges, sizes) from given lambda=0 and largest-lambda curves."""
    R, S = len(cfg.ridges), len(cfg.ratios)
    c = np.ones((1, 1, 4, R, S))
    c[0, 0, 0, 0], c[0, 0, 3, 0], c[0, 0, 1, 0] = risk0, norm0, err0
    c[0, 0, 0, -1] = risk_big
    return c


def test_random_features_checks_pass_on_belkin_shape_and_fail_without_it():
    cfg = _rf_cfg(datasets="digits", features="relu", ratios="0.25,0.5,1,2,4")
    sizes = np.array([75, 150, 300, 600, 1200])
    good = rf._summarize(cfg, sizes, _rf_curves(cfg, [1, 3, 50, 2, 0.5], [1, 5, 90, 4, 2],
                                                [0.3, 0.4, 0.8, 0.2, 0.1], [1, 0.8, 0.6, 0.5, 0.4]))
    assert all(_verdicts(good).values()), [c for c in good.checks if not c.passed]
    assert "random_features" in good.figures
    bad = rf._summarize(cfg, sizes, _rf_curves(cfg, [1, 0.9, 0.8, 0.7, 0.6], [1, 2, 3, 4, 5],
                                               [0.3, 0.4, 0.5, 0.6, 0.7], [1, 0.8, 2, 0.5, 0.4]))
    v = _verdicts(bad)
    assert not v["test risk peaks at N = n (minimum-norm, squared loss)"]
    assert not v["solution norm peaks at N = n"]
    assert not v["test 0-1 error peaks at N = n"]
    assert not v["ridge lambda=0.001 removes the peak"]
    assert not v["the second descent beats the first"]


def test_random_features_config_rules():
    with pytest.raises(ConfigError, match="contain 1"):
        _rf_cfg(ratios="0.5,2")
    with pytest.raises(ConfigError, match="first lambda must be 0"):
        _rf_cfg(ridges="0.1,1")
    with pytest.raises(ConfigError, match="features"):
        _rf_cfg(features="tanh")
    with pytest.raises(ConfigError, match="digits"):
        _rf_cfg(n_train=2000)


def test_random_features_tiny_run():
    cfg = _rf_cfg(datasets="digits", n_train=60, n_test=100, ratios="0.5,0.9,1,1.1,2,4", feature_seeds=2)
    result = rf.run(cfg, RunContext())
    assert result.arrays["test_risk"].shape == (1, 2, 3, 6)
    assert result.metrics["norm_peak_ratio"] == {"digits/relu": 1.0, "digits/fourier": 1.0}
    assert len(result.checks) == 5 and "random_features" in result.figures


# ---------------------------------------------------------------- epoch-wise double descent

def _edd_cfg(**sets):
    return resolve_config(edd.EpochDoubleDescentConfig, edd.PRESETS, "quick", sets=sets)


def test_epoch_profile_finds_minimum_peak_and_final():
    curve = np.array([0.9, 0.5, 0.3, 0.35, 0.45, 0.4, 0.32, 0.3, 0.3, 0.3])
    p = edd.epoch_profile(curve, tail=0.2)
    assert (p["min_index"], p["peak_index"]) == (2, 4)
    assert p["rise"] == pytest.approx(0.15) and p["descent"] == pytest.approx(0.15)
    mono = edd.epoch_profile(np.linspace(0.9, 0.2, 20))
    assert mono["rise"] == 0.0


def test_epoch_checks_pass_on_nakkiran_shapes_and_fail_otherwise():
    cfg = _edd_cfg(margin=0.02)
    t = np.arange(1, 201, dtype=float)
    epochs = np.concatenate([[0.0], t])
    log = np.log(epochs + 1)
    u_shape = 0.6 - 0.45 * np.minimum(log / 3, 1) + 0.12 * np.clip((log - 3) / 1.5, 0, 1)        # falls, rises, stays
    double = u_shape - 0.10 * np.clip((log - 4.5) / 0.8, 0, 1)                                     # ... and falls again
    train = np.maximum(0.9 - log / 4, 0)

    def stack(c):
        return np.stack([c, c + 0.01], axis=1)

    good = edd._summarize(cfg, 1000, epochs, {"threshold": 100, "large": 1000},
                          {"threshold": (stack(u_shape + 0.02), stack(train)), "large": (stack(double), stack(train))})
    assert all(_verdicts(good).values()), [c for c in good.checks if not c.passed]
    swapped = edd._summarize(cfg, 1000, epochs, {"threshold": 100, "large": 1000},
                             {"threshold": (stack(double), stack(train)), "large": (stack(u_shape + 0.05), stack(train))})
    assert not any(_verdicts(swapped).values())
    mono = np.linspace(0.6, 0.2, len(epochs))
    flat = edd._summarize(cfg, 1000, epochs, {"threshold": 100, "large": 1000},
                          {"threshold": (stack(mono), stack(train)), "large": (stack(mono), stack(train))})
    v = _verdicts(flat)
    assert not v["large model: epoch-wise double descent"]
    assert not v["model near threshold: rises and stays (early stopping wins)"]


def test_epoch_config_rules():
    with pytest.raises(ConfigError, match="large_width"):
        _edd_cfg(threshold_width=64, large_width=32)


def test_epoch_tiny_run():
    cfg = _edd_cfg(dataset="digits", n_train=100, n_test=100, threshold_width=8, large_width=32, epochs=12,
                   batch_size=50, seeds=2, lr=0.01)
    result = edd.run(cfg, RunContext())
    assert result.arrays["epochs"].tolist() == list(range(13))
    assert result.arrays["large_test_error"].shape == (13, 2)
    assert len(result.checks) == 3 and "epoch_double_descent" in result.figures


# ---------------------------------------------------------------- sample-wise double descent

def _sdd_cfg(**sets):
    return resolve_config(sdd.SampleDoubleDescentConfig, sdd.PRESETS, "quick", sets=sets)


def test_more_data_hurts_and_last_fitted():
    rise, pair, hurts = sdd.more_data_hurts([100, 200, 400, 800], np.array([0.5, 0.4, 0.55, 0.3]), 0.05)
    assert rise == pytest.approx(0.15) and pair == (200, 400) and hurts
    rise, _, hurts = sdd.more_data_hurts([100, 200, 400], np.array([0.5, 0.4, 0.3]), 0.0)
    assert rise < 0 and not hurts
    assert sdd.last_fitted_index(np.array([0.0, 0.0, 0.05, 0.2]), 0.01) == 1
    assert sdd.last_fitted_index(np.array([0.1, 0.2]), 0.01) is None


def test_sample_checks_pass_on_nakkiran_shape_and_fail_on_a_monotone_curve():
    cfg = _sdd_cfg(dataset="mnist1d", sizes="100,200,400,800,1600,3200")
    train = np.array([0.0, 0.0, 0.0, 0.05, 0.1, 0.12])[:, None].repeat(2, 1)
    peaked = np.array([0.5, 0.45, 0.55, 0.5, 0.4, 0.35])[:, None].repeat(2, 1)
    good = sdd._summarize(cfg, 3000, train, peaked)
    assert all(_verdicts(good).values()), [c for c in good.checks if not c.passed]
    mono = np.array([0.6, 0.5, 0.45, 0.4, 0.38, 0.37])[:, None].repeat(2, 1)
    assert not any(_verdicts(sdd._summarize(cfg, 3000, train, mono)).values())


def test_sample_config_rules():
    with pytest.raises(ConfigError, match="strictly increasing"):
        _sdd_cfg(sizes="500,250,1000,1200")
    with pytest.raises(ConfigError, match="digits"):
        _sdd_cfg(dataset="digits", sizes="500,1000,2000")


def test_sample_tiny_run():
    cfg = _sdd_cfg(dataset="digits", sizes="50,100,200", n_test=100, width=8, steps=30, seeds=2)
    result = sdd.run(cfg, RunContext())
    assert result.metrics["sizes"] == [50, 100, 200] and result.arrays["test_error"].shape == (3, 2)
    assert len(result.checks) == 3 and "sample_double_descent" in result.figures
