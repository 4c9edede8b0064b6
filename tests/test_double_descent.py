import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.studies.base import RunContext
from overparam.studies.double_descent import PRESETS, DoubleDescentConfig, _summarize, interpolation_index, run


def _cfg(**sets):
    return resolve_config(DoubleDescentConfig, PRESETS, "quick", sets=sets)


def _checks(result):
    return {c.name: c.passed for c in result.checks}


def test_checks_pass_on_a_textbook_curve_and_fail_without_a_peak():
    cfg = _cfg(widths="4,8,16,32,64,128")
    params = np.array([300, 700, 1800, 5000, 15000, 50000])
    train = np.array([0.5, 0.3, 0.1, 0.0, 0.0, 0.0])
    peaked = _summarize(cfg, 4000, params, train, np.array([0.5, 0.48, 0.52, 0.58, 0.5, 0.46]), train, train)
    assert all(_checks(peaked).values()) and peaked.metrics["peak_width"] == 32
    flat = _summarize(cfg, 4000, params, train, np.array([0.6, 0.55, 0.5, 0.48, 0.46, 0.45]), train, train)
    verdicts = _checks(flat)
    assert not verdicts["peak sits at the interpolation threshold"]
    assert not verdicts["peak error exceeds both ends"]
    never = _summarize(cfg, 4000, params, np.full(6, 0.2), np.array([0.5, 0.48, 0.52, 0.58, 0.5, 0.46]), train, train)
    assert not _checks(never)["threshold is of the order of the training-set size"]


def test_ties_within_one_standard_error_count_but_distant_peaks_do_not():
    cfg = _cfg(widths="4,8,16,32,64,128")
    params = np.array([300, 700, 1800, 5000, 15000, 50000])
    train = np.array([0.5, 0.3, 0.2, 0.1, 0.0, 0.0])            # threshold at h=64 (index 4)
    test = np.array([0.5, 0.52, 0.565, 0.562, 0.55, 0.46])      # argmax at h=16, two steps before it
    name = "peak sits at the interpolation threshold"
    assert not _checks(_summarize(cfg, 4000, params, train, test, train, train))[name]
    tight = np.full(6, 0.001)                                    # h=32 is 0.003 below the max: not tied
    assert not _checks(_summarize(cfg, 4000, params, train, test, train, train, tight))[name]
    loose = np.full(6, 0.005)                                    # h=32 within one SE of the max: tied
    assert _checks(_summarize(cfg, 4000, params, train, test, train, train, loose))[name]


def test_interpolation_index():
    assert interpolation_index(np.array([0.3, 0.01, 0.0, 0.0])) == 2
    assert interpolation_index(np.array([0.3, 0.01])) is None


def test_reference_checks_only_for_the_reference_setup():
    paper = resolve_config(DoubleDescentConfig, PRESETS, "paper")
    params = np.arange(len(paper.widths)) + 1
    zeros = np.zeros(len(paper.widths))
    names = [c.name for c in _summarize(paper, 4000, params, zeros, zeros + 0.5, zeros, zeros).checks]
    assert "error at the widest model (h=300)" in names
    quick = _cfg()
    z = np.zeros(len(quick.widths))
    assert "error at the widest model (h=300)" not in [c.name for c in _summarize(
        quick, 4000, np.arange(len(z)) + 1, z, z, z, z).checks]


def test_config_rules():
    with pytest.raises(ConfigError, match="strictly increasing"):
        _cfg(widths="8,4,16")
    with pytest.raises(ConfigError, match="at least 3"):
        _cfg(widths="8,16")
    with pytest.raises(ConfigError, match="data_dir"):
        _cfg(dataset="mnist")


def test_tiny_run_produces_metrics_arrays_and_figure():
    cfg = _cfg(dataset="digits", n_train=300, n_test=200, widths="2,16,64", epochs=60, batch_size=300, lr=0.01,
               repeats=1)
    result = run(cfg, RunContext())
    m = result.metrics
    assert m["widths"] == [2, 16, 64] and len(m["test_error"]) == 3
    assert m["params"] == [64 * 2 + 2 + 2 * 2 + 2 + 2 * 10 + 10, 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10,
                           64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10]
    assert m["train_error"][2] <= m["train_error"][0]  # the wide net fits better than the 2-unit one
    assert set(result.arrays) >= {"widths", "params", "train_error", "test_error"}
    assert "double_descent" in result.figures
