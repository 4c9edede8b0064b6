"""Studies lottery-ticket and ticket-perturbation: every check driven both ways, plus tiny real runs."""

import numpy as np
import pytest
import torch

from overparam.config import ConfigError
from overparam.studies import lottery_ticket as lt
from overparam.studies import ticket_perturbation as tp
from overparam.studies.base import RunContext

torch.set_num_threads(1)

LT_CHECKS = ["winning tickets match the dense network", "late rewinding matches the dense network too",
             "random re-initialization falls behind", "random pruning falls behind", "winning tickets stop earlier",
             "the ticket is stable to data order"]


def _lt_inputs(published: bool):
    cfg = lt.LotteryTicketConfig()           # rounds 8, control levels 4 and 8, range 10-25%
    L, S = cfg.rounds, 2
    remaining = 0.8 ** np.arange(L + 1)
    nan = np.full((L + 1, S), np.nan)
    if published:   # tickets rise above dense and learn faster, controls fall behind, stable
        imp = np.linspace(0.60, 0.63, L + 1)[:, None] + np.zeros(S)
        stop = np.linspace(450, 250, L + 1)[:, None] + np.zeros(S)
        ctrl = imp - 0.08
        barrier = 0.0
    else:           # tickets lose accuracy, no faster, controls as good, unstable
        imp = np.linspace(0.60, 0.50, L + 1)[:, None] + np.zeros(S)
        stop = np.full((L + 1, S), 450.0)
        ctrl = imp + 0.005
        barrier = 0.12
    acc = {"imp": imp, "imp_late": imp.copy(), "random_prune": nan.copy(), "reinit": nan.copy()}
    for level in cfg.control_levels:
        acc["random_prune"][level] = acc["reinit"][level] = ctrl[level]
    stops = {"imp": stop, "imp_late": stop.copy(), "random_prune": nan.copy(), "reinit": nan.copy()}
    return cfg, remaining, acc, stops, {k: v.copy() for k, v in acc.items()}, \
        {"dense": 0.0, "imp": barrier, "imp_late": barrier}, {}


@pytest.mark.parametrize("published", [True, False])
def test_lottery_checks_follow_the_published_shape(published):
    res = lt.summarize(*_lt_inputs(published))
    assert [c.name for c in res.checks] == LT_CHECKS
    assert [c.passed for c in res.checks] == [published] * len(LT_CHECKS)
    assert res.metrics["control_level"] == 8 and res.metrics["best_ticket_level"] in (7, 8)
    assert "lottery_ticket" in res.figures


def test_lottery_checks_fail_one_at_a_time():
    cfg, remaining, acc, stop, final, inst, curves = _lt_inputs(True)
    acc["reinit"][8] = acc["imp"][8]                # re-init as good as the ticket
    res = lt.summarize(cfg, remaining, acc, stop, final, inst, curves)
    assert [c.passed for c in res.checks] == [True, True, False, True, True, True]
    _, _, acc, stop, final, inst, _ = _lt_inputs(True)
    stop["imp"][:] = 450.0                          # no earlier stop
    inst["imp"] = 0.05                              # unstable
    res = lt.summarize(cfg, remaining, acc, stop, final, inst, curves)
    assert [c.passed for c in res.checks] == [True, True, True, True, False, False]


def test_early_stop_takes_the_minimum_validation_loss_after_step_zero():
    val = np.array([[0.1, 3.0], [2.0, 2.0], [1.0, 1.5], [1.5, 1.0]])
    err = np.array([[0.9, 0.9], [0.5, 0.6], [0.3, 0.4], [0.2, 0.1]])
    steps, acc = lt.early_stop([0, 10, 20, 30], val, err)
    assert steps.tolist() == [20, 30] and np.allclose(acc, [0.7, 0.9])


def test_lottery_config_errors():
    with pytest.raises(ConfigError, match="control_levels"):
        lt.LotteryTicketConfig(rounds=3, control_levels=[4]).validate()
    with pytest.raises(ConfigError, match="rewind_step"):
        lt.LotteryTicketConfig(steps=40, rewind_step=50).validate()
    with pytest.raises(ConfigError, match="data_dir"):
        lt.LotteryTicketConfig(dataset="mnist").validate()


def test_lottery_tiny_real_run():
    cfg = lt.LotteryTicketConfig(n_train=300, n_val=100, n_test=200, widths=[24, 12], steps=30, eval_every=10,
                                 rounds=2, control_levels=[2], seeds=1, rewind_step=5, target_low=0.5,
                                 target_high=0.9)
    res = lt.run(cfg, RunContext())
    assert [c.name for c in res.checks] == LT_CHECKS
    m = res.metrics
    assert m["remaining"][0] == 1.0 and 0.6 < m["remaining"][2] < 0.7
    assert m["accuracy"]["reinit"][2] is not None and m["accuracy"]["reinit"][1] is None
    assert set(m["instability_error_barrier"]) == {"dense", "imp", "imp_late"}
    assert all(0 <= v <= 1 for v in m["instability_error_barrier"].values())
    assert res.arrays["acc_imp"].shape == (3, 1)


def _tp_inputs(shape: str):
    cfg = tp.TicketPerturbationConfig()          # scales 0, 0.1, 0.3, 1; four widths
    S = 2
    ticket, dense, rnd = 0.60, 0.59, 0.50
    if shape == "escape":          # the ticket needs its context; width helps
        frozen = [0.60, 0.58, 0.50, 0.30]
        embedded = [0.61, 0.57, 0.52, 0.50]
        scratch = [0.45, 0.52, 0.57, 0.60]
    elif shape == "lottery":       # the ticket does not care about the rest; width does nothing
        frozen = [0.60, 0.60, 0.605, 0.595]
        embedded = [0.61, 0.61, 0.60, 0.60]
        scratch = [0.59, 0.59, 0.595, 0.60]
    else:                          # no winning ticket at all
        ticket = 0.52
        frozen = [0.52, 0.52, 0.52, 0.52]
        embedded = [0.6] * 4
        scratch = [0.45, 0.52, 0.57, 0.60]
    rep = lambda v: np.tile(np.asarray(v, float), (S, 1))  # noqa: E731
    return (cfg, 0.18, 7900, np.full(S, dense), np.full(S, ticket), rep(frozen), rep(embedded), rep(frozen) - 0.2,
            np.full(S, rnd), rep(scratch), np.array([1650, 5235, 14210, 43410]))


@pytest.mark.parametrize("shape, expected, depends", [
    ("escape", [True, True, False, True], True),
    ("lottery", [True, False, True, False], False),
    ("no-ticket", [False, False, True, True], False),
])
def test_perturbation_checks_state_each_hypothesis(shape, expected, depends):
    res = tp.summarize(*_tp_inputs(shape))
    assert [c.passed for c in res.checks] == expected
    assert res.metrics["ticket_depends_on_rest"] is depends
    assert ("depends on the rest" in res.notes) is depends
    assert "ticket_perturbation" in res.figures


def test_perturbation_checks_read_the_full_redraw_not_the_largest_scale():
    args = list(_tp_inputs("lottery"))
    args[0] = tp.TicketPerturbationConfig(scales=[0.0, 0.3, 1.0, 4.0])
    for k in (5, 6, 7):   # a collapse at sigma=4 only
        args[k] = np.concatenate([args[k][:, [0, 2, 3]], np.full((2, 1), 0.3)], axis=1)
    res = tp.summarize(*args)
    assert [c.passed for c in res.checks][1:3] == [False, True]


def test_perturbation_config_errors_and_embedding():
    with pytest.raises(ConfigError, match="scales"):
        tp.TicketPerturbationConfig(scales=[0.1, 1.0]).validate()
    with pytest.raises(ConfigError, match="contain 1"):
        tp.TicketPerturbationConfig(scales=[0.0, 0.5]).validate()
    with pytest.raises(ConfigError, match="width_factors"):
        tp.TicketPerturbationConfig(width_factors=[1.0]).validate()
    from overparam.interventions.prune import dense_masks, magnitude_prune
    from overparam.models import MLP, seeded
    a, b = seeded(lambda: MLP(4, [6], 2), 0), seeded(lambda: MLP(4, [6], 2), 1)
    masks = magnitude_prune(a, dense_masks(a), 0.5)
    e = tp._embed(a, b, masks, 0.3)
    for n, p in e.named_parameters():
        pa, pb = dict(a.named_parameters())[n], dict(b.named_parameters())[n]
        if n in masks:
            assert torch.equal(p[masks[n]], pa[masks[n]]) and torch.equal(p[~masks[n]], 0.3 * pb[~masks[n]])
        else:
            assert torch.equal(p, pa)   # biases from theta0


def test_perturbation_tiny_real_run():
    cfg = tp.TicketPerturbationConfig(n_train=300, n_val=100, n_test=200, widths=[24, 12], steps=30, eval_every=10,
                                      rounds=2, scales=[0.0, 1.0], width_factors=[0.25, 1.0], seeds=1)
    res = tp.run(cfg, RunContext())
    m = res.metrics
    assert len(res.checks) == 4
    assert len(m["frozen_accuracy"]) == 2 and len(m["scratch_accuracy"]) == 2
    assert 0.5 < m["remaining"] < 0.6           # two rounds of 25% (output layer 12.5%)
    assert m["scratch_params"][1] == 40 * 24 + 24 + 24 * 12 + 12 + 12 * 10 + 10
