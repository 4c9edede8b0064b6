"""The batch-size study (Keskar et al. 2016; Sagun et al. 2017).

The summary is driven with synthetic numbers so every check passes on the published picture and fails
without it; train_to_target is checked against plain training; one tiny real run exercises run() end to end.
"""

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from overparam.config import ConfigError, resolve_config  # noqa: E402
from overparam.models import MLP, seeded  # noqa: E402
from overparam.studies import base  # noqa: E402
from overparam.studies import batch_size as bs  # noqa: E402
from overparam.studies.base import RunContext  # noqa: E402
from overparam.train import Ensemble, TrainConfig, evaluate, loss_function, train  # noqa: E402


def _cfg(**sets):
    return resolve_config(bs.BatchSizeConfig, bs.PRESETS, "quick", sets=sets)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_with_both_presets_and_validated():
    study = base.REGISTRY["batch-size"]
    assert set(study.presets) >= {"quick", "paper"}
    resolve_config(bs.BatchSizeConfig, bs.PRESETS, "paper", sets={})
    with pytest.raises(ConfigError, match="large_batch"):
        _cfg(large_batch=50)            # 5% of n_train=1000: not Keskar's LB regime
    with pytest.raises(ConfigError, match="large_batch"):
        _cfg(small_batch=300, large_batch=200)
    with pytest.raises(ConfigError, match="large_batch"):
        _cfg(large_batch=2000)


# ----------------------------------------------------------------------------------------- train_to_target
def _toy(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    return X, y


def test_train_to_target_snapshots_the_first_chunk_meeting_the_target():
    X, y = _toy()
    build = lambda: MLP(5, [8], 2)  # noqa: E731
    cfg = TrainConfig(optimizer="sgd", lr=0.2, batch_size=16, seed=3)
    per_epoch = math.ceil(60 / 16)                      # 4 steps; chunk_steps=6 rounds up to 2 epochs = 8
    target = 0.3
    fit = bs.train_to_target(Ensemble([seeded(build, 1)]), X, y, cfg, 2, target, max_steps=4000, chunk_steps=6)
    assert fit.reached[0] and fit.steps[0] % (2 * per_epoch) == 0
    lf = loss_function("cross_entropy", 2)
    assert evaluate(fit.models[0], X, y, lf)[0] == pytest.approx(fit.value[0], rel=1e-5)
    assert fit.value[0] <= target
    # replaying the same chunks with the plain loop: the chunk before the snapshot was still above the target
    m = seeded(build, 1)
    losses = []
    for k in range(fit.steps[0] // 8):
        train(m, X, y, TrainConfig(optimizer="sgd", lr=0.2, batch_size=16, steps=8, seed=3 * 7919 + k))
        losses.append(evaluate(m, X, y, lf)[0])
    assert losses[-1] == pytest.approx(fit.value[0], rel=1e-4)
    assert all(v > target for v in losses[:-1])


def test_train_to_target_caps_steps_and_honours_min_steps():
    X, y = _toy()
    build = lambda: MLP(5, [8], 2)  # noqa: E731
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=20, seed=0)
    never = bs.train_to_target(Ensemble([seeded(build, s) for s in (1, 2)]), X, y, cfg, 2, 1e-9,
                               max_steps=30, chunk_steps=3)
    assert not never.reached.any() and list(never.steps) == [30, 30]
    calls = []
    easy = bs.train_to_target(Ensemble([seeded(build, 1)]), X, y, cfg, 2, 100.0, max_steps=300, chunk_steps=3,
                              min_steps=12, progress=lambda s, v: calls.append(s))
    assert easy.reached[0] and easy.steps[0] == 12 and calls == [3, 6, 9, 12]
    with pytest.raises(ValueError, match="metric"):
        bs.train_to_target(Ensemble([seeded(build, 1)]), X, y, cfg, 2, 0.1, 10, metric="test_loss")


# ------------------------------------------------------------------------------------------------ summary
def _per(sb_sharp=1.0, lb_sharp=5.0, sb_eig=2.0, lb_eig=6.0, sb_err=0.50, lb_err=0.55):
    def one(sharp, eig, err):
        return {"train_loss": np.array([0.02, 0.02]), "train_error": np.zeros(2),
                "test_loss": np.array([3.0, 3.1]), "test_error": np.array([err, err]),
                "sharpness": np.array([sharp, sharp * 1.1]), "top_eig": np.array([eig, eig * 0.9])}
    return {"sb": one(sb_sharp, sb_eig, sb_err), "lb": one(lb_sharp, lb_eig, lb_err), "lbsb": one(1.1, 2.1, 0.5)}


def _barriers(twist=0.01):
    return {"sb_lb": np.array([0.06, 0.05]), "lb_lbsb": np.array([twist, twist / 2]),
            "sb_lbsb": np.array([0.03, 0.02])}


def _fitted(reached=True):
    return bs.Fitted(models=[None, None], steps=np.array([100, 100]), value=np.array([0.02, 0.02]),
                     reached=np.array([True, reached]))


NAMES = ["LB solutions are sharper than SB (Keskar sharpness)", "LB solutions have a larger top Hessian eigenvalue",
         "LB generalizes no better than SB (the generalization gap)",
         "the twist: no barrier between LB and where SB takes it"]


def test_checks_pass_on_the_published_picture():
    cfg = _cfg()
    res = bs.summarize(cfg, _per(), _barriers(), np.array([1.5, 1.2]), _fitted(), _fitted(), _fitted())
    v = _verdicts(res)
    assert list(v) == NAMES and all(v.values()), res.checks
    assert res.metrics["sharpness_ratio_lb_sb"] == pytest.approx(5.0)
    assert res.metrics["test_error_gap_lb_sb"] == pytest.approx(0.05)


@pytest.mark.parametrize("kw, failing", [
    ({"lb_sharp": 0.9}, NAMES[0]),                 # LB flatter than SB
    ({"lb_eig": 1.5}, NAMES[1]),                   # LB less curved
    ({"lb_err": 0.45}, NAMES[2]),                  # LB generalizes better
])
def test_each_keskar_check_fails_without_its_effect(kw, failing):
    res = bs.summarize(_cfg(), _per(**kw), _barriers(), np.array([1.5, 1.2]), _fitted(), _fitted(), _fitted())
    v = _verdicts(res)
    assert not v[failing] and sum(v.values()) == 3


def test_twist_fails_on_a_barrier_or_when_sb_does_not_get_back():
    cfg = _cfg()
    res = bs.summarize(cfg, _per(), _barriers(twist=0.5), np.array([1.5, 1.2]), _fitted(), _fitted(), _fitted())
    assert not _verdicts(res)[NAMES[3]]
    res = bs.summarize(cfg, _per(), _barriers(), np.array([1.5, 1.2]), _fitted(), _fitted(), _fitted(False))
    assert not _verdicts(res)[NAMES[3]]
    # the generalization comparison is only fair at the same training loss
    res = bs.summarize(cfg, _per(), _barriers(), np.array([1.5, 1.2]), _fitted(), _fitted(False), _fitted())
    assert not _verdicts(res)[NAMES[2]]


# ------------------------------------------------------------------------------------------- tiny real run
def test_tiny_real_run_end_to_end():
    cfg = _cfg(dataset="digits", n_train=200, n_test=100, width=16, small_batch=8, large_batch=50,
               target_loss=0.3, max_steps=3000, seeds=1, sharpness_iters=3, interp_steps=3, interp_extend=0.5,
               landscape_steps=3, lr=0.05)
    res = bs.run(cfg, RunContext())
    assert [c.name for c in res.checks] == NAMES
    assert set(res.figures) == {"landscape", "interpolation"}
    m = res.metrics
    for key in ("sb_sharpness", "lb_sharpness", "lbsb_sharpness", "sb_top_eig", "lb_top_eig", "sb_test_error"):
        assert np.isfinite(m[key]), key
    assert m["target_reached"] and m["lb_fraction"] == 0.25
    assert m["sb_train_loss"] <= 0.3 and m["lb_train_loss"] <= 0.3
    # 3 points in [0, 1] extended by 0.5 on each side: alphas -0.5, 0, 0.5, 1, 1.5
    np.testing.assert_allclose(res.arrays["interp_sb_lb_alphas"], [-0.5, 0, 0.5, 1, 1.5])
    assert res.arrays["interp_lb_lbsb_train_loss"].shape == (1, 5)
    assert res.arrays["landscape2d_sb_loss"].shape == (3, 3)
    # the interpolation's endpoints are the solutions' own training losses
    assert res.arrays["interp_sb_lb_train_loss"][0, 1] == pytest.approx(m["sb_train_loss"], rel=1e-4)
    assert res.arrays["interp_sb_lb_train_loss"][0, 3] == pytest.approx(m["lb_train_loss"], rel=1e-4)
    import matplotlib.pyplot as plt
    plt.close("all")
