"""The hessian-spectrum study: its gap rule, a tiny configuration end to end, and (the tour's configuration)
its quick preset with every literature check passing."""

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.studies import hessian_spectrum as hs  # importing registers the study
from overparam.studies.base import REGISTRY, RunContext


def test_gap_rule():
    assert hs.count_outliers(np.array([10, 9, 8, 1, 0.9, 0.8, 0.5]), k=3) == 3
    assert hs.count_outliers(np.array([10, 1, 0.9, 0.8, 0.7, 0.6, 0.5]), k=2) == 1
    assert hs.count_outliers(np.array([5, 4, 3, 2.9, 2.8, 0.1, 0.1]), k=2) == 5  # the gap must lie within 3k
    assert hs.count_outliers(np.array([1.0, -1.0]), k=2) == 1


def test_config_rules():
    with pytest.raises(ConfigError, match="k_values"):
        resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick", sets={"k_values": "4"})
    with pytest.raises(ConfigError, match="batch_sizes"):
        resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick", sets={"batch_sizes": "800,8"})
    with pytest.raises(ConfigError, match="width"):
        resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick", sets={"width": "12"})
    assert "hessian-spectrum" in REGISTRY
    resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "paper")


def test_tiny_run_dense_and_slq_paths():
    sets = {"k": "3", "k_values": "2,3", "d": "4", "n_train": "60", "width": "6", "widths": "4,6",
            "steps": "150", "batch_sizes": "8,60", "batch_size": "60"}
    cfg = resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick", sets=sets)
    res = hs.run(cfg, RunContext())
    assert len(res.checks) == 5 and all(c.source for c in res.checks)
    assert set(res.figures) == {"spectrum", "outliers_vs_k", "width_and_batch", "gauss_newton"}
    m = res.metrics
    assert m["spectrum_method"] == "dense" and m["params_base"] == 4 * 6 + 6 + 6 * 6 + 6 + 6 * 3 + 3
    assert len(res.arrays["eigenvalues_base"]) == m["params_base"]
    assert m["gauss_newton_top_rel_diff"] >= 0
    # the matrix-free path (eigsh for the top, SLQ for the bulk) on the same tiny nets
    cfg2 = resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick", sets=dict(sets, dense_limit="10"))
    res2 = hs.run(cfg2, RunContext())
    assert res2.metrics["spectrum_method"] == "eigsh+slq"
    np.testing.assert_allclose(res2.arrays["top_base"], res.arrays["top_base"], rtol=1e-6, atol=1e-9)


def test_quick_preset_passes_its_checks():
    # the tour's configuration (quick preset), ~25 s
    cfg = resolve_config(hs.HessianSpectrumConfig, hs.PRESETS, "quick")
    res = hs.run(cfg, RunContext())
    failed = [f"{c.name}: {c.measured}" for c in res.checks if not c.passed]
    assert not failed, failed
