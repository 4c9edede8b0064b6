"""spawn-vs-slide: the K-Gaussian model's gradients against closed forms (the pull vanishes far from the
bump), the (S, K) batch equals training one by one, the checks on synthetic outcomes, one tiny real run."""

import math

import numpy as np
import pytest
import torch

from overparam.config import ConfigError, resolve_config
from overparam.models.gaussians import GaussianSum, centre_gradient, gaussian, grid_loss, line_centre_gradient
from overparam.studies import base
from overparam.studies import spawn_vs_slide as svs
from overparam.studies.base import RunContext

D = torch.float64


def _cfg(**over):
    return resolve_config(svs.SpawnVsSlideConfig, svs.PRESETS, "quick", over)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_and_validated():
    assert set(base.REGISTRY["spawn-vs-slide"].presets) >= {"quick", "paper"}
    resolve_config(svs.SpawnVsSlideConfig, svs.PRESETS, "paper", {})
    with pytest.raises(ConfigError):
        _cfg(Ks=[4, 2])
    with pytest.raises(ConfigError):
        _cfg(lo=1.0, hi=0.0)


def test_model_shapes_and_values():
    m = GaussianSum(torch.tensor([[0.0, 1.0]], dtype=D), torch.tensor([[1.0, 0.5]], dtype=D),
                    torch.tensor([[2.0, -1.0]], dtype=D))
    x = torch.tensor([0.0, 1.0], dtype=D)
    expect = torch.tensor([2.0 - math.exp(-2.0), 2 * math.exp(-0.5) - 1.0], dtype=D)
    torch.testing.assert_close(m(x)[0], expect)
    assert m(x.reshape(-1, 1)).shape == (1, 2) and m.components(x).shape == (1, 2, 2)
    with pytest.raises(ValueError):
        GaussianSum(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))   # widths must be > 0


def test_centre_gradient_closed_form_equals_autograd():
    m = GaussianSum.random(5, 7, (0.0, 1.0), 0.05, 0.3, seed=3, dtype=D)
    x = torch.linspace(0, 1, 200, dtype=D)
    target = gaussian(x, 0.6, 0.03, 1.0)
    grid_loss(m, x, target).sum().backward()
    torch.testing.assert_close(centre_gradient(m, x, target), m.centre.grad, rtol=1e-10, atol=1e-14)


def test_line_closed_form_matches_a_fine_grid_and_decays_like_a_gaussian():
    mu, sigma, A, w, a = 0.0, 0.3, 1.0, 0.2, 0.5
    lo, hi = -8.0, 8.0
    x = torch.linspace(lo, hi, 32001, dtype=D)
    target = gaussian(x, mu, sigma, A)
    v = sigma ** 2 + w ** 2
    grads = []
    for d in (0.1, 0.36, 1.0, 2.0):
        m = GaussianSum(torch.tensor([[mu + d]], dtype=D), torch.tensor([[w]], dtype=D), torch.tensor([[a]], dtype=D))
        g_grid = float(centre_gradient(m, x, target)[0, 0]) * (hi - lo)    # mean over the grid ~ integral / length
        g_line = line_centre_gradient(mu + d, w, a, mu, sigma, A)
        assert g_grid == pytest.approx(g_line, rel=1e-3, abs=1e-12)
        assert g_line > 0          # positive gradient at c > mu: descent moves the bump towards the target
        grads.append(abs(g_line))
    assert grads[1] == max(grads)  # the pull peaks at distance sqrt(v) = 0.36 and then decays
    # far away: the closed form is a Gaussian in the distance, below any float resolution at 10 sqrt(v)
    far = line_centre_gradient(mu + 10 * math.sqrt(v), w, a, mu, sigma, A)
    assert 0 < abs(far) < 1e-18 * grads[1]
    ratio = far / line_centre_gradient(mu + 9 * math.sqrt(v), w, a, mu, sigma, A)
    assert ratio == pytest.approx(10 / 9 * math.exp(-(100 - 81) / 2), rel=1e-9)


def test_far_bump_on_the_grid_gets_no_gradient():
    cfg = _cfg()
    cs = np.array([cfg.target_centre + 0.03, cfg.far_centre])
    auto, closed, line = svs.gradient_profile(cfg, cs)
    # up to float64 round-off in the grid sum (the self term of a bump sums to ~0, not exactly 0, on a grid)
    np.testing.assert_allclose(auto, closed, rtol=1e-10, atol=1e-15 * abs(auto[0]))
    assert abs(auto[1]) < 1e-14 * abs(auto[0])
    assert abs(line[1]) < 1e-60 * abs(line[0])     # the exact pull from the target: exp(-d^2 / 2v), d = 12 sqrt(v)


def test_batch_equals_one_by_one():
    x = torch.linspace(0, 1, 60, dtype=D)
    target = gaussian(x, 0.5, 0.05, 1.0)
    batch = GaussianSum.random(3, 4, (0.0, 1.0), 0.05, 0.2, seed=11, dtype=D)
    singles = [batch.select(s) for s in range(3)]
    lb, _ = svs.fit(batch, x, target, 60, 0.02)
    for s, single in enumerate(singles):
        ls, _ = svs.fit(single, x, target, 60, 0.02)
        assert ls[0] == pytest.approx(lb[s], rel=1e-9, abs=1e-15)
        for name in ("centre", "log_width", "amplitude"):
            torch.testing.assert_close(getattr(single, name)[0], getattr(batch, name)[s], rtol=1e-9, atol=1e-12)


def _summary(cfg, frac, far_rel=1.0, far_grad=0.0, gmax=1.0):
    S = 100
    rel = np.array([[1e-4 if i < round(f * S) else 1.0 for i in range(S)] for f in frac])
    init_dist = np.full((len(frac), S), 0.4)          # every K=1 seed starts far ...
    init_dist[0, : round(frac[0] * S)] = 0.01         # ... except the successful ones
    cs = np.linspace(0, 1, 11)
    auto = np.r_[gmax, np.zeros(10)]
    snaps = [(0, torch.tensor([[0.2]]), None, None), (10, torch.tensor([[0.2]]), None, None)]
    return svs.summarize(cfg, rel, init_dist, far_rel, 1e-5, snaps, cs, auto, auto, auto, far_grad, 0.0)


def test_checks_pass_on_the_predicted_shape_and_fail_otherwise():
    cfg = _cfg(Ks=[1, 2, 4, 8])
    good = _summary(cfg, [0.3, 0.55, 0.8, 1.0])
    assert all(_verdicts(good).values()), [c.measured for c in good.checks]
    flat = _verdicts(_summary(cfg, [0.3, 0.35, 0.3, 0.35]))
    assert not flat["success fraction rises with K (spawn beats slide)"]
    dip = _verdicts(_summary(cfg, [0.2, 0.9, 0.5, 1.0]))
    assert not dip["success fraction rises with K (spawn beats slide)"]
    slid = _verdicts(_summary(cfg, [0.3, 0.55, 0.8, 1.0], far_rel=1e-4))
    assert not slid["K = 1 started far from the bump fails"]
    pulled = _verdicts(_summary(cfg, [0.3, 0.55, 0.8, 1.0], far_grad=1e-3))
    assert not pulled["no gradient far away"]


def test_tiny_end_to_end_run():
    cfg = _cfg(Ks=[1, 8], seeds=16, steps=40)
    res = svs.run(cfg, RunContext())
    assert res.arrays["relative_loss"].shape == (2, 16)
    assert set(res.figures) == {"success_vs_K", "slide_and_spawn", "centre_gradient"}
    v = _verdicts(res)
    assert v["no gradient far away"] and v["K = 1 started far from the bump fails"], [c.measured for c in res.checks]
    assert res.metrics["far_run_centre_moved"] < 0.01   # it never slides the 0.5 to the target
