"""The ntk-spectrum study: a tiny config end to end, and the tour's quick preset."""

import numpy as np
import pytest

import overparam.studies.ntk_spectrum as ntk_study  # importing registers the study
from overparam.config import ConfigError, resolve_config
from overparam.studies.base import REGISTRY, RunContext

TINY = {"datasets": ["sphere", "digits"], "n_points": 60, "width": 64, "fit_last": 20, "gap_dataset": "sphere",
        "gap_n_train": 100, "gap_n_test": 100, "gap_width": 32, "gap_seeds": 2, "gap_epochs": 3,
        "lazy_widths": [16, 64], "lazy_points": 30, "lazy_steps": 20, "kernel_points": 30}


def test_registered_with_presets():
    study = REGISTRY["ntk-spectrum"]
    assert {"quick", "paper"} <= set(study.presets)
    resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "paper")


def test_tiny_run_produces_checks_figures_and_arrays():
    cfg = resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "quick", sets=TINY)
    res = ntk_study.run(cfg, RunContext())
    names = [c.name for c in res.checks]
    assert sum("decays faster" in n for n in names) == 2 and any("lazy" in n for n in names)
    assert all(c.source and isinstance(c.passed, bool) for c in res.checks)
    assert set(res.figures) == {"ntk_spectra", "generalization_gap", "lazy_regime"}
    lam = res.arrays["eigs_sphere_vanilla"]
    assert lam.shape == (60,) and np.all(np.diff(lam) <= 1e-9 * lam[0])
    assert res.arrays["lazy_relative_change"].shape == (2,)
    assert 0 <= res.metrics["gap_binary"]["train_acc"] <= 1


def test_checks_can_fail():
    cfg = resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "quick", sets=TINY)
    spec = ntk_study.spectra(cfg, RunContext())
    spec["sphere"]["vanilla"], spec["sphere"]["binary"] = spec["sphere"]["binary"], spec["sphere"]["vanilla"]
    gaps = {"vanilla": np.array([[1.0, 0.9]]), "binary": np.array([[1.0, 0.5]])}
    res = ntk_study._summarize(cfg, spec, gaps, np.array([0.01, 0.02]))
    failed = {c.name for c in res.checks if not c.passed}
    assert "sphere: binary NTK spectrum decays faster than vanilla" in failed
    assert any("generalization gap" in n for n in failed) and any("lazy" in n for n in failed)


def test_bad_config_is_one_line_error():
    with pytest.raises(ConfigError, match="fit_last"):
        resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "quick", sets={"fit_last": "3"})
    with pytest.raises(ConfigError, match="lazy_widths"):
        resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "quick", sets={"lazy_widths": "64"})


def test_quick_preset_as_in_the_tour():
    # The tour's configuration: `overparam tour` runs this preset; ~40 s on 2 idle cores.
    cfg = resolve_config(ntk_study.NTKSpectrumConfig, ntk_study.PRESETS, "quick")
    res = ntk_study.run(cfg, RunContext())
    assert len(res.checks) == 7 and res.status == "done"
    # the paper's central claim, with wide margins on this preset (all seven checks passed when written)
    faster = [c for c in res.checks if "decays faster" in c.name]
    assert len(faster) == 3 and all(c.passed for c in faster), [c.measured for c in faster]
