"""The saddle-index study: its index equals the Hessian instrument's, Newton refinement lands on a known saddle,
the checks pass and fail on synthetic data as they should, and real runs (tiny and quick) go end to end."""

import numpy as np
import torch

from overparam.config import resolve_config
from overparam.measure.hessian import hessian_index
from overparam.models import MLP
from overparam.studies import saddle_index as si  # importing registers the study
from overparam.studies.base import REGISTRY, RunContext


def cfg_with(**sets):
    return resolve_config(si.SaddleIndexConfig, si.PRESETS, "quick", sets={k: str(v) for k, v in sets.items()})


def test_index_of_a_quadratic_saddle_and_newton_finds_it():
    # f = x0^2 - 2 x1^2 + 3 x2^2 - x3^2 + x0 x2: eigenvalues of its Hessian: two negative, two positive
    A = torch.tensor([[2.0, 0, 1, 0], [0, -4, 0, 0], [1, 0, 6, 0], [0, 0, 0, -2]], dtype=torch.float64)
    c = torch.tensor([0.5, -1.0, 0.25, 2.0], dtype=torch.float64)

    def f(t):
        u = t - c
        return 0.5 * u @ A @ u

    idx, lmin = si.index_of(f, c[None], zero_rtol=1e-8)
    assert idx[0] == 0.5 and abs(lmin[0] - float(torch.linalg.eigvalsh(A)[0])) < 1e-12
    start = c[None] + 0.3 * torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    found, gnorm = si.newton_refine(f, start, iters=30)
    assert torch.allclose(found, c.expand(3, 4), atol=1e-10) and float(gnorm.max()) < 1e-10
    # a flat direction (zero eigenvalue) is neither negative nor positive
    idx0, _ = si.index_of(lambda t: t[0] ** 2 - t[1] ** 2 + 0 * t[2], torch.zeros(1, 3, dtype=torch.float64), 1e-8)
    assert abs(idx0[0] - 1 / 3) < 1e-12


def test_student_index_matches_the_hessian_instrument():
    X, y = si.teacher_data(3, 2, 40, seed=1)
    h = 3
    loss = si.student_loss(X, y, h, "tanh")
    theta = si.init_students(3, h, 2, scale=1.0, seed=5)
    theta, _, _, _ = si.train_students(loss, theta, lr=0.3, steps=200, record_every=50)
    refined, gn = si.newton_refine(loss, theta, iters=60)
    # theta = 0 is a critical point of a tanh student on centered targets (every gradient has a zero factor),
    # and a saddle: the output-weight/input-weight cross terms give negative curvature
    refined = torch.cat([refined, torch.zeros(1, refined.shape[1], dtype=refined.dtype)])
    assert float(torch.func.grad(loss)(refined[-1]).norm()) < 1e-12
    idx, _ = si.index_of(loss, refined, zero_rtol=1e-6)
    assert idx[-1] > 0
    for r in range(3):
        net = MLP(3, [h], 1, activation="tanh").to(torch.float64)
        torch.nn.utils.vector_to_parameters(refined[r], net.parameters())
        with torch.no_grad():
            assert abs(float(loss(refined[r])) - float(((net(X)[:, 0] - y) ** 2).mean())) < 1e-12
        exact = hessian_index(net, "mse", (X, y[:, None]), method="dense", rtol=1e-6)
        assert exact.fraction == idx[r]


def test_stall_points_find_plateaus_and_the_end():
    g = torch.tensor([[1.0, 2.0, 0.1, 1.5, 0.9, 0.01, 0.5, 0.2], [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]]).T
    picks = si.stall_points(g, ratio=0.3, max_plateaus=1)
    assert picks[0] == [5, 7]                  # deepest plateau (0.01) kept, 0.1 dropped (max_plateaus=1)
    assert picks[1] == [7]                     # no local minimum in time: only the end
    assert si.stall_points(g, ratio=0.3, max_plateaus=2)[0] == [2, 5, 7]


def _synthetic(index_rises: bool, stuck_falls: bool):
    cfg = cfg_with(widths="2,4,8")
    rng = np.random.default_rng(0)
    w, loss, index = [], [], []
    for h in cfg.widths:
        ls = rng.uniform(0, 0.5, 20)
        noise = 0.02 * rng.standard_normal(20)
        w += [h] * 20
        loss += ls.tolist()
        index += np.clip((0.4 * ls if index_rises else 0.2 - 0.4 * ls) + noise, 0, 1).tolist()
    n = len(w)
    points = {"width": np.array(w), "loss": np.array(loss), "index": np.array(index),
              "grad_after": np.full(n, 1e-12), "grad_before": np.full(n, 1e-3), "moved": np.zeros(n),
              "lambda_min": np.zeros(n), "seed": np.zeros(n), "step": np.zeros(n), "final": np.ones(n, bool)}
    final = np.array([[0.5] * 8 + [0.0] * 2, [0.5] * 4 + [0.0] * 6, [0.0] * 10])
    if not stuck_falls:
        final = final[::-1]
    return si.summarize(cfg, np.array([9, 17, 33]), points, final)


def test_checks_pass_and_fail_on_synthetic_data():
    ok = _synthetic(True, True)
    assert [c.passed for c in ok.checks] == [True, True] and all(c.source for c in ok.checks)
    assert ok.metrics["stuck_fraction"] == [0.8, 0.4, 0.0]
    assert [c.passed for c in _synthetic(False, True).checks] == [False, True]
    assert [c.passed for c in _synthetic(True, False).checks] == [True, False]
    # points that are not critical (large gradient) are not evidence: with none left the check fails
    res = _synthetic(True, True)
    cfg = cfg_with(widths="2,4,8")
    pts = {k[len("point_"):]: v.copy() for k, v in res.arrays.items()
           if k.startswith("point_") and k != "point_critical"}
    pts["grad_after"] = np.full(len(pts["grad_after"]), 1.0)
    failed = si.summarize(cfg, np.array([9, 17, 33]), pts, res.arrays["final_loss"])
    assert not failed.checks[0].passed and np.isnan(failed.metrics["spearman_rho"])


def test_stratified_spearman_ignores_between_group_offsets():
    # within each group index rises with loss, but groups are offset the other way: pooled rho < 0
    x = np.r_[np.arange(10.0), np.arange(10.0) + 20]
    y = np.r_[np.arange(10.0) + 50, np.arange(10.0)]
    groups = np.r_[np.zeros(10), np.ones(10)]
    assert si.spearman(x, y)[0] < 0
    rho, p = si.spearman(x, y, groups)
    assert rho > 0.99 and p < 1e-6
    assert np.isnan(si.spearman(x, np.ones(20), groups)[0])


def test_tiny_run():
    cfg = cfg_with(widths="1,2", seeds=3, steps=150, record_every=25, newton_steps=10, n_train=30)
    res = si.run(cfg, RunContext())
    assert "saddle-index" in REGISTRY
    assert len(res.checks) == 2 and all(c.source for c in res.checks)
    assert res.arrays["final_loss"].shape == (2, 3)
    n = len(res.arrays["point_loss"])
    assert n >= 6 and all(len(res.arrays[f"point_{k}"]) == n for k in ("index", "grad_after", "moved", "width"))
    assert np.all((res.arrays["point_index"] >= 0) & (res.arrays["point_index"] <= 1))
    assert "saddle_index" in res.figures


def test_divergence_is_reported():
    import pytest

    from overparam.train import Diverged

    with pytest.raises(Diverged, match="lower the learning rate"):
        si.run(cfg_with(widths="1,2", seeds=2, steps=200, lr=10.0, init_scale=5.0, n_train=20, activation="relu"),
               RunContext())


def test_quick_preset():
    # the tour's configuration (quick preset), ~40 s on one thread of this loaded machine
    res = si.run(resolve_config(si.SaddleIndexConfig, si.PRESETS, "quick"), RunContext())
    assert res.metrics["n_critical"] >= 20
    assert res.metrics["max_grad_after_critical"] <= 1e-6
    failed = [f"{c.name}: {c.measured}" for c in res.checks if not c.passed]
    assert not failed, failed
