"""escape-width: the teacher, stall detection, the checks on synthetic outcomes (pass on the published shape, fail
without it), the escape test on a known escapable point and a known minimum, the widening that keeps the
function, and one tiny end-to-end run."""

import numpy as np
import pytest
import torch

from overparam.config import ConfigError
from overparam.models import MLP
from overparam.studies.base import RunContext
from overparam.studies.escape_width import (STUDY, EscapeWidthConfig, probe, stalled_runs, success_summary, summarize,
                                            teacher_data, widen)
from overparam.train import TrainConfig, train_ensemble


def _teacher_student(W):
    k, d = W.shape
    m = MLP(d, [k], 1).double()
    with torch.no_grad():
        m.net[0].weight.copy_(W)
        m.net[0].bias.zero_()
        m.net[2].weight.fill_(1.0)
        m.net[2].bias.zero_()
    return m


def test_teacher_is_orthonormal_and_realizable():
    X, y, W = teacher_data(3, 5, 50, seed=1)
    assert X.shape == (50, 5) and y.shape == (50, 1) and W.shape == (3, 5)
    assert torch.allclose(W @ W.T, torch.eye(3, dtype=W.dtype), atol=1e-12)
    assert torch.equal(teacher_data(3, 5, 50, seed=1)[1], y)
    assert torch.allclose(_teacher_student(W)(X), y, atol=1e-12)      # a student of width k can fit it exactly


def test_stalled_runs_on_synthetic_curves():
    t = np.linspace(0, 1, 21)[:, None]
    plateau = np.where(t < 0.3, 1 - t, 0.7)             # flat over the second half
    slow = 1 - 0.5 * t                                   # still falling
    solved = np.exp(-30 * t)
    L = np.hstack([plateau, slow, solved])
    success = L[-1] < 1e-3
    assert success.tolist() == [False, False, True]
    assert stalled_runs(L, success, 0.05).tolist() == [True, False, False]


def test_success_checks_pass_on_the_published_shape_and_fail_without_it():
    ok = success_summary([1, 2, 10], np.array([[1, 0, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1]], bool), margin=0.3)
    assert ok["helps"] and ok["failures_exist"] and ok["at_teacher"] == 0.5 and ok["gain"] == 0.5
    flat = success_summary([1, 2, 10], np.array([[1, 0, 0, 1], [1, 0, 0, 1], [1, 0, 1, 1]], bool), margin=0.3)
    assert not flat["helps"]                             # width does not help enough
    easy = success_summary([1, 10], np.ones((2, 4), bool), margin=0.3)
    assert not easy["failures_exist"] and not easy["helps"]


def _probes(n, escaped, widened_ok):
    loss = np.full(n, 0.08)
    return {"loss": loss, "grad_norm": np.full(n, 1e-3), "index": np.full(n, 0.04), "n_negative": np.ones(n),
            "lambda_min": np.full(n, -1e-4), "lambda_max": np.full(n, 7.0), "escape_loss": loss.copy(),
            "escaped": np.arange(n) < escaped, "widened_loss": np.where(np.arange(n) < widened_ok, 0.0, 0.08),
            "replica": np.arange(n)}


@pytest.mark.parametrize("escaped,widened_ok,expect", [(0, 6, [True, True]), (5, 6, [False, True]),
                                                       (0, 1, [True, False])])
def test_probe_checks_on_synthetic_probes(escaped, widened_ok, expect):
    cfg = EscapeWidthConfig(multipliers=[1, 10], seeds=8)
    final = np.array([[0.1] * 6 + [0.0] * 2, [0.0] * 8])
    stalled = final > 0
    empty = {k: np.zeros(0) for k in _probes(0, 0, 0)}
    res = summarize(cfg, [3, 30], final, stalled, [_probes(6, escaped, widened_ok), empty])
    verdicts = [c.passed for c in res.checks]
    assert verdicts[:2] == [True, True] and verdicts[2:] == expect
    assert res.metrics["success_fraction"] == [0.25, 1.0] and res.metrics["probed"] == [6, 0]
    none = summarize(cfg, [3, 30], np.zeros((2, 8)), np.zeros((2, 8), bool), [empty, empty])
    assert [c.passed for c in none.checks] == [False, False, False, False]   # nothing fails: no effect to see


def test_widen_keeps_the_function_and_opens_a_descent_direction():
    X, y, W = teacher_data(2, 3, 40, seed=0)
    torch.manual_seed(0)
    narrow = MLP(3, [2], 1).double()
    wide = widen(narrow, 3, seed=5)
    assert wide.widths == [5]
    assert torch.allclose(wide(X), narrow(X), atol=1e-14)
    loss = torch.nn.functional.mse_loss(wide(X), y)
    g = torch.autograd.grad(loss, wide.net[2].weight)[0]
    assert g[0, 2:].abs().max() > 1e-6                   # the new units' output weights get a gradient


def test_escape_test_on_a_known_escapable_point_and_a_known_minimum():
    """The width-1 optimum is a minimum (not escaped); splitting it into two identical units with half the output
    weight each is a degenerate saddle of the width-2 loss: Hessian index 0, yet the push escapes it."""
    torch.set_num_threads(1)
    X, y, _ = teacher_data(2, 2, 120, seed=0)
    tc = TrainConfig(optimizer="adam", lr=0.02, steps=1500, schedule="cosine", loss="mse", batch_size=120,
                     eval_every=1500, dtype="float64")
    ens, hist = train_ensemble(lambda: MLP(2, [1], 1), [0, 1, 2, 3], X, y, tc)
    one = ens.replica(int(np.argmin(hist.final()["train_loss"]))).double()
    split = MLP(2, [2], 1).double()
    with torch.no_grad():
        split.net[0].weight.copy_(one.net[0].weight.repeat(2, 1))
        split.net[0].bias.copy_(one.net[0].bias.repeat(2))
        split.net[2].weight.copy_(one.net[2].weight.repeat(1, 2) / 2)
        split.net[2].bias.copy_(one.net[2].bias)
    assert torch.allclose(split(X), one(X), atol=1e-12)
    cfg = EscapeWidthConfig(escape_steps=600)
    res = probe([one, split], X, y, cfg, seed=0)
    var = float(y.var())
    assert res["loss"][0] / var > 0.05 and res["grad_norm"].max() < 1e-6   # a stuck critical point
    assert res["escaped"].tolist() == [False, True]
    assert res["n_negative"][1] == 0                                        # the index alone says "minimum"
    assert res["escape_loss"][1] < 1e-3 * var


def test_config_validation():
    with pytest.raises(ConfigError, match="multipliers"):
        EscapeWidthConfig(multipliers=[2, 4]).validate()
    with pytest.raises(ConfigError, match="d:"):
        EscapeWidthConfig(teacher_width=4, d=3).validate()
    assert set(STUDY.presets) >= {"quick", "paper"}


def test_tiny_end_to_end():
    cfg = EscapeWidthConfig(teacher_width=2, d=3, n_train=60, multipliers=[1, 4], seeds=8, steps=400,
                            max_probe=3, escape_steps=100)
    res = STUDY.run(cfg, RunContext())
    m = res.metrics
    assert m["widths"] == [2, 8] and len(m["success_fraction"]) == 2 and len(res.checks) == 4
    assert all(0 <= f <= 1 for f in m["success_fraction"])
    assert res.arrays["final_loss"].shape == (2, 8) and "escape_width" in res.figures
    assert m["probed"][0] <= 3
