"""The am-capacity study: a tiny config checks its plumbing; the quick preset is the tour's configuration."""

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.studies import am_capacity as amc
from overparam.studies.base import REGISTRY, RunContext


def test_registered():
    assert REGISTRY["am-capacity"].config is amc.AmCapacityConfig


def test_tiny_config_runs_and_checks_can_fail():
    cfg = resolve_config(amc.AmCapacityConfig, amc.PRESETS, "quick",
                         sets={"d": 32, "gammas": "0.25,0.5,1,2", "trials": 2, "m": 16, "sgd_steps": 20})
    res = amc.run(cfg, RunContext())
    assert "am_capacity" in res.figures
    assert res.arrays["gamma"].tolist() == [0.25, 0.5, 1.0, 2.0]
    assert np.all(res.arrays["pinv_relative_mse"][:3] < 1e-8)
    names = [c.name for c in res.checks]
    assert "pseudo-inverse recall is exact up to capacity" in names
    # a corrupted measurement must fail the comparison with theory
    meas = {r: {q: res.arrays[f"{r}_{q}"].copy() for q in amc.QUANTITIES} for r in cfg.rules}
    theo = {r: {q: res.arrays[f"{r}_{q}_theory"] for q in amc.QUANTITIES} for r in cfg.rules}
    meas["pinv"]["relative_mse"][0] = 0.1
    meas["hebbian"]["crosstalk_var"] *= 1.5
    bad = amc._summarize(cfg, res.arrays["gamma"], [8, 16, 32, 64], meas, theo,
                         {"pinv": np.r_[np.ones(50), -np.ones(50)], "hebbian": np.r_[np.ones(50), -np.ones(50)]},
                         {"pinv": 0.3, "hebbian": 0.3})
    failed = {c.name for c in bad.checks if not c.passed}
    assert {"pseudo-inverse recall is exact up to capacity", "Hebbian crosstalk variance is (n-1)/d",
            "pinv: over-capacity crosstalk is Gaussian-like"} <= failed


def test_config_errors():
    with pytest.raises(ConfigError, match="gammas"):
        resolve_config(amc.AmCapacityConfig, amc.PRESETS, "quick", sets={"gammas": "1,0.5"})
    with pytest.raises(ConfigError, match="rules"):
        resolve_config(amc.AmCapacityConfig, amc.PRESETS, "quick", sets={"rules": "oja"})


def test_quick_preset_passes_its_checks():
    # the tour's configuration
    cfg = resolve_config(amc.AmCapacityConfig, amc.PRESETS, "quick")
    res = amc.run(cfg, RunContext())
    failed = [(c.name, c.measured) for c in res.checks if not c.passed]
    assert not failed, failed
    assert len(res.checks) >= 10
