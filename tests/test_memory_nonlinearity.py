"""The nonlinearity-information study and its closed forms."""

import math

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.studies import nonlinearity_information as nli
from overparam.studies.base import REGISTRY, RunContext


def test_bits_per_unit_matches_closed_forms():
    for sigma in (0.05, 0.3):
        assert nli.bits_per_unit("identity", 1.0, sigma) == pytest.approx(0.5 * math.log2(1 + sigma ** -2), abs=1e-3)
    assert nli.bits_per_unit("sign", 3.0, 0.05) == pytest.approx(1.0, abs=1e-3)
    # homogeneous nonlinearities do not care about the gain once outputs are scaled to unit variance
    assert nli.bits_per_unit("relu", 0.5, 0.1) == pytest.approx(nli.bits_per_unit("relu", 20.0, 0.1), abs=1e-6)


def test_sign_ceiling_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for k in (1, 3, 8):
        u = rng.standard_normal((200_000, k))
        r = np.linalg.norm(u, axis=1)
        assert nli.sign_r2_ceiling(k) == pytest.approx(np.mean(r) ** 2 / np.mean(r ** 2), abs=3e-3)
    assert nli.sign_r2_ceiling(1) == pytest.approx(2 / math.pi)


def test_tiny_run_and_a_failing_check():
    cfg = resolve_config(nli.NonlinearityInformationConfig, nli.PRESETS, "quick",
                         sets={"in_dim": 3, "width": 16, "gains": "1,20", "n_train": 400, "n_test": 200,
                               "grid": 1500})
    res = nli.run(cfg, RunContext())
    assert res.arrays["next_am_capacity"][cfg.nonlinearities.index("identity")].tolist() == [3, 3]
    assert res.arrays["next_am_capacity"][cfg.nonlinearities.index("square")].tolist() == [6, 6]
    assert "nonlinearity_information" in res.figures
    # pretend the square kept the sign: the check must fail
    r2 = res.arrays["r2_linear"].copy()
    r2[cfg.nonlinearities.index("square")] = 0.9
    bad = nli._summarize(cfg, r2, res.arrays["r2_quadratic"], res.arrays["sign_accuracy"],
                         res.arrays["bits_per_unit"], res.arrays["next_am_capacity"])
    assert not {c.name: c.passed for c in bad.checks}["the square loses the sign (and only the sign)"]
    assert REGISTRY["nonlinearity-information"].run is nli.run


def test_config_error():
    with pytest.raises(ConfigError, match="n_train"):
        resolve_config(nli.NonlinearityInformationConfig, nli.PRESETS, "quick", sets={"n_train": 100})


def test_quick_preset_passes_its_checks():
    # the tour's configuration
    res = nli.run(resolve_config(nli.NonlinearityInformationConfig, nli.PRESETS, "quick"), RunContext())
    failed = [(c.name, c.measured) for c in res.checks if not c.passed]
    assert not failed, failed
