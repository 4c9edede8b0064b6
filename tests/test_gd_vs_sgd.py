"""The gd-vs-sgd study (the talk's 2x2 table, Sagun et al. 2014): the width rule, every check driven both
ways with synthetic results, and one tiny real run."""

import numpy as np
import pytest

from overparam.config import ConfigError, resolve_config
from overparam.models import MLP, count_parameters, mlp_parameter_count
from overparam.studies import base
from overparam.studies import gd_vs_sgd as gs
from overparam.studies.base import RunContext


def _cfg(**sets):
    return resolve_config(gs.GdVsSgdConfig, gs.PRESETS, "quick", sets=sets)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_with_both_presets_and_config_rules():
    assert set(base.REGISTRY["gd-vs-sgd"].presets) >= {"quick", "paper"}
    resolve_config(gs.GdVsSgdConfig, gs.PRESETS, "paper")
    with pytest.raises(ConfigError, match="large_params"):
        _cfg(small_params=5000, large_params=4000)
    with pytest.raises(ConfigError, match="data_dir"):
        _cfg(dataset="mnist")
    with pytest.raises(ConfigError, match="schedule"):
        _cfg(schedule="step")


def test_width_rule_on_mnist_matches_the_talks_counts():
    h_small, h_large = gs.scaled_width(43_000, 784, 10, 1), gs.scaled_width(450_000, 784, 10, 1)
    assert (h_small, h_large) == (54, 566)
    assert mlp_parameter_count(784, [54], 10) == 42_940 == count_parameters(MLP(784, [54], 10))
    assert mlp_parameter_count(784, [566], 10) == 449_980


@pytest.mark.parametrize("d,depth", [(64, 1), (40, 1), (64, 2), (784, 2)])
def test_width_rule_is_the_closest_count_to_the_scaled_target(d, depth):
    for P in (43_000, 450_000):
        target = P * d / 784
        h = gs.scaled_width(P, d, 10, depth)
        brute = min(range(1, 5000), key=lambda w: abs(mlp_parameter_count(d, [w] * depth, 10) - target))
        assert h == brute
    assert gs.scaled_width(43_000, 64, 10, 1) == 47 and gs.scaled_width(450_000, 64, 10, 1) == 490


def _cells(errors, seeds=4, evals=5, spread=0.002):
    """Synthetic ensemble curves whose final test errors average to errors[cell]."""
    rng = np.random.default_rng(0)
    cells = {}
    for c, e in errors.items():
        noise = rng.normal(0, spread, seeds)
        final = e + noise - noise.mean()
        te = np.linspace(0.5, 0, evals)[:, None] + final[None, :]
        cells[c] = {"test_error": te, "train_loss": np.linspace(2, 0.05, evals)[:, None].repeat(seeds, 1),
                    "train_error": np.linspace(0.9, 0, evals)[:, None].repeat(seeds, 1)}
    return np.linspace(0, 500, 5), cells


def _summary(errors, n_test=540):
    cfg = _cfg()
    steps, cells = _cells(errors)
    return gs._summarize(cfg, steps, cells, {"small": 47, "large": 490}, {"small": 3535, "large": 36760},
                         500, n_test, 64)


def test_checks_pass_on_the_talks_table_and_fail_without_it():
    talk = {c: v / 10_000 for c, v in gs.TALK.items()}
    good = _summary(talk, n_test=10_000)
    assert all(_verdicts(good).values()), [c for c in good.checks if not c.passed]
    row = good.metrics["table"]["small-GD"]
    assert row["talk_of_10000"] == 299 and row["measured_per_10000"] == pytest.approx(299.0)
    assert set(good.figures) == {"misclassifications", "test_error_vs_step"}
    # scaled to 10K from a 540-image test set
    assert _summary(talk, n_test=540).metrics["table"]["large-SGD"]["measured_of_test_set"] == pytest.approx(
        174 * 540 / 10_000, abs=0.01)

    # GD beats SGD for both sizes: the optimizer check and the order fail, the size check holds
    swapped = {("small", "sgd"): talk[("small", "gd")], ("small", "gd"): talk[("small", "sgd")],
               ("large", "sgd"): talk[("large", "gd")], ("large", "gd"): talk[("large", "sgd")]}
    v = _verdicts(_summary(swapped))
    assert not v["SGD beats GD (small and large net)"] and not v["same order of the four as the talk"]
    assert v["large net beats small net (SGD and GD)"]

    # the small net wins with GD only: the size check fails
    v = _verdicts(_summary({**talk, ("small", "gd"): 0.018}))
    assert not v["large net beats small net (SGD and GD)"]

    # both effects right, but the optimizer matters more than size (large-GD worse than small-SGD)
    v = _verdicts(_summary({("small", "sgd"): 0.030, ("small", "gd"): 0.040,
                            ("large", "sgd"): 0.020, ("large", "gd"): 0.035}))
    assert v["large net beats small net (SGD and GD)"] and v["SGD beats GD (small and large net)"]
    assert not v["same order of the four as the talk"]

    # a tie is not an order: large-GD equal to large-SGD fails the optimizer check and the order
    v = _verdicts(_summary({**talk, ("large", "gd"): talk[("large", "sgd")]}))
    assert not v["SGD beats GD (small and large net)"] and not v["same order of the four as the talk"]
    assert v["large net beats small net (SGD and GD)"]


def test_tiny_real_run():
    cfg = _cfg(n_train=100, n_test=100, small_params=20_000, large_params=100_000, steps=60, evals=3, seeds=2)
    res = gs.run(cfg, RunContext())
    assert res.metrics["widths"] == {"small": gs.scaled_width(20_000, 64, 10, 1),
                                     "large": gs.scaled_width(100_000, 64, 10, 1)}
    assert res.arrays["large_gd_test_error"].shape == (4, 2)            # step 0 and 3 evaluations
    assert len(res.checks) == 3 and len(res.figures) == 2
    for row in res.metrics["table"].values():
        assert 0 <= row["test_error"] < 0.7 and row["final_train_loss"] < 2.0   # chance: 0.9 and ln 10
