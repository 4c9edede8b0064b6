"""The memorization study (Zhang et al. 2017): exact corruption and steps-to-fit helpers, every check
driven both ways with synthetic curves, and one tiny real run."""

import numpy as np
import pytest
import torch

from overparam.config import ConfigError, resolve_config
from overparam.studies import base
from overparam.studies import memorization as mem
from overparam.studies.base import RunContext


def _cfg(**sets):
    return resolve_config(mem.MemorizationConfig, mem.PRESETS, "quick", sets=sets)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_with_both_presets():
    assert set(base.REGISTRY["memorization"].presets) >= {"quick", "paper"}
    _cfg()
    resolve_config(mem.MemorizationConfig, mem.PRESETS, "paper")


def test_config_rules():
    with pytest.raises(ConfigError, match="corruptions"):
        _cfg(corruptions="0,1")
    with pytest.raises(ConfigError, match="corruptions"):
        _cfg(corruptions="0,0.6,0.4")
    with pytest.raises(ConfigError, match="corruptions"):
        _cfg(corruptions="0,0.5,1.5")
    with pytest.raises(ConfigError, match="inputs"):
        _cfg(inputs="shuffled_pixels,blur")
    with pytest.raises(ConfigError, match="data_dir"):
        _cfg(dataset="mnist")


def test_zhang_corruption_counts_nesting_and_random_limit():
    y = torch.arange(1000) % 10
    assert torch.equal(mem.zhang_label_corruption(y, 10, 0.0, seed=3), y)
    fresh = mem.zhang_label_corruption(y, 10, 1.0, seed=3)
    # p = 1: every label redrawn uniformly over all 10 classes, so ~90% differ and all classes appear
    assert 0.85 < float((fresh != y).float().mean()) < 0.95
    assert set(fresh.tolist()) == set(range(10))
    lo, hi = (mem.zhang_label_corruption(y, 10, p, seed=3) for p in (0.2, 0.4))
    # nested: an example relabelled at p=0.2 carries the same new label at p=0.4, and at p=1
    changed_lo = lo != y
    assert torch.equal(hi[changed_lo], lo[changed_lo]) and torch.equal(fresh[changed_lo], lo[changed_lo])
    # exactly round(p n) examples are redrawn; about 1/C of them keep their label by chance
    assert 0.2 * 0.85 * 1000 < int(changed_lo.sum()) <= 200
    assert torch.equal(mem.zhang_label_corruption(y, 10, 0.4, seed=3), hi)        # deterministic in the seed
    assert not torch.equal(mem.zhang_label_corruption(y, 10, 0.4, seed=4), hi)


def test_steps_to_fit_exact():
    steps = np.array([0, 10, 20, 30, 40])
    err = np.array([[0.9, 0.9, 0.9], [0.5, 0.2, 0.9], [0.0, 0.1, 0.9], [0.0, 0.0, 0.5], [0.0, 0.0, 0.01]])
    np.testing.assert_array_equal(mem.steps_to_fit(steps, err, 1.0), [20, 30, np.nan])
    np.testing.assert_array_equal(mem.steps_to_fit(steps, err, 0.99), [20, 30, 40])
    assert mem.spearman([0, 1, 2, 3], [1, 5, 7, 100]) == pytest.approx(1.0)
    assert mem.spearman([0, 1, 2, 3], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(mem.spearman([0, 1, 2], [5, 5, 5]))


def _curves(cfg, fit_steps, test_err, final_acc=None, seeds=2):
    """Synthetic (train_error, test_error) per condition: train error falls linearly to 0 at fit_steps[k]."""
    steps = np.arange(0, 1001, 10, dtype=float)
    curves = {}
    for j, (key, _, _) in enumerate(mem.conditions(cfg)):
        tr = np.clip(0.9 * (1 - steps / fit_steps[j]), 0, None)
        if final_acc is not None and final_acc[j] < 1:
            tr = np.maximum(tr, 1 - final_acc[j])
        tr = np.repeat(tr[:, None], seeds, 1)
        te = np.full((len(steps), seeds), test_err[j])
        curves[key] = (tr, te)
    return steps, curves


def test_checks_pass_on_zhang_shape_and_fail_without_it():
    cfg = _cfg()
    # conditions: p = 0, .2, .4, .6, .8, 1, then shuffled pixels, random pixels, gaussian
    fits = [100, 300, 400, 500, 600, 650, 150, 500, 550]
    tests = [0.04, 0.2, 0.37, 0.55, 0.72, 0.9, 0.05, 0.88, 0.9]
    good = mem._summarize(cfg, *_curves(cfg, fits, tests), n_classes=10, n_train=500, params=38410)
    assert all(_verdicts(good).values()), [c for c in good.checks if not c.passed]
    assert good.metrics["spearman_fit_time_vs_p"] == pytest.approx(1.0)
    assert set(good.figures) == {"train_accuracy_vs_step", "steps_to_fit_vs_corruption", "test_error_vs_corruption"}

    # random labels stuck at 80% train accuracy: not memorized (and then slowest, so the trend still holds)
    acc = [1, 1, 1, 1, 1, 0.8, 1, 1, 1]
    stuck = _verdicts(mem._summarize(cfg, *_curves(cfg, fits, tests, acc), 10, 500, 38410))
    assert not stuck["labels at p=1 are memorized"] and stuck["time to fit grows with label corruption"]

    # time to fit flat, or falling, with corruption
    for f in ([300] * 6 + fits[6:], [650, 600, 500, 400, 300, 100] + fits[6:]):
        v = _verdicts(mem._summarize(cfg, *_curves(cfg, f, tests), 10, 500, 38410))
        assert not v["time to fit grows with label corruption"]
        assert v["labels at p=1 are memorized"]

    # test error at p=1 far from chance (e.g. it still generalizes), and true labels not generalizing
    v = _verdicts(mem._summarize(cfg, *_curves(cfg, fits, [0.04, 0.1, 0.2, 0.3, 0.4, 0.5] + tests[6:]),
                                 10, 500, 38410))
    assert not v["test error at p=1 is near chance"] and v["true labels generalize (p=0)"]
    v = _verdicts(mem._summarize(cfg, *_curves(cfg, fits, [0.6] + tests[1:]), 10, 500, 38410))
    assert not v["true labels generalize (p=0)"] and v["test error at p=1 is near chance"]

    # an input corruption that is not fitted
    v = _verdicts(mem._summarize(cfg, *_curves(cfg, fits, tests, [1] * 8 + [0.9]), 10, 500, 38410))
    assert not v["random inputs are memorized too"]


def test_levels_without_p1_cannot_claim_chance():
    cfg = _cfg(corruptions="0,0.2,0.5", inputs="gaussian")
    res = mem._summarize(cfg, *_curves(cfg, [100, 200, 300, 100], [0.04, 0.2, 0.9, 0.9]), 10, 500, 38410)
    v = _verdicts(res)
    assert not v["test error at p=0.5 is near chance"]          # chance is only claimed at p = 1


def test_tiny_real_run():
    cfg = _cfg(n_train=60, n_test=100, width=256, corruptions="0,0.5,1", inputs="gaussian", epochs=30,
               batch_size=20, seeds=2)
    res = mem.run(cfg, RunContext())
    assert len(res.checks) == 5 and len(res.figures) == 3
    assert res.arrays["p=1_train_error"].shape == (31, 2)           # one evaluation per epoch plus step 0
    acc = res.metrics["final_train_accuracy"]
    # 60 examples, 19K parameters: true labels are fitted, random labels well above chance (10%)
    assert acc["labels p=0"] == 1.0 and acc["labels p=1"] > 0.5
    assert res.metrics["final_test_error"]["labels p=0"] < res.metrics["final_test_error"]["labels p=1"]
