"""The eigenvalue-fluctuations study: the batched ensemble trains exactly like one net at a time, the
Tracy-Widom approximation is the right law, and a tiny configuration runs end to end."""

import numpy as np
import torch
from torch import nn

from overparam.config import resolve_config
from overparam.models import MLP
from overparam.studies import hessian_fluctuations as hf  # importing registers the study
from overparam.studies.base import REGISTRY, RunContext


def tiny(**sets):
    base = {"n_seeds": "12", "n_train": "20", "steps": "40"}
    base.update({k: str(v) for k, v in sets.items()})
    return resolve_config(hf.FluctuationsConfig, hf.PRESETS, "quick", sets=base)


def test_ensemble_matches_sequential_training():
    cfg = tiny()
    X, y = hf.two_blobs(cfg.n_train, cfg.cluster_std, 0)
    _, params, gnorm, losses = hf.train_ensemble(cfg, X, y, seed=3)
    for i in (0, 7):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3 * 1_000_003 + i)
            net = MLP(2, cfg.hidden, 2).to(torch.float64)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X), y).backward()
            opt.step()
        for name, p in net.named_parameters():
            assert torch.allclose(params[name][i], p.detach(), atol=1e-12), name
        assert abs(losses[i] - float(nn.functional.cross_entropy(net(X), y))) < 1e-12


def test_tracy_widom_approximation_moments():
    # Chiani's gamma approximation reproduces TW1's mean -1.2065 and variance 1.6078 (Tracy & Widom 1996)
    mean = hf.TW1_SHAPE * hf.TW1_SCALE + hf.TW1_SHIFT
    var = hf.TW1_SHAPE * hf.TW1_SCALE ** 2
    assert abs(mean - (-1.2065)) < 2e-3 and abs(var - 1.6078) < 2e-3
    rng = np.random.default_rng(0)
    gumbel_sample = rng.gumbel(3.0, 0.5, size=2000)
    fits = hf.fit_laws(gumbel_sample)
    assert fits["gumbel"]["ks"] < fits["tracy_widom"]["ks"] or fits["gumbel"]["p"] > 0.05


def test_tiny_run():
    res = hf.run(tiny(), RunContext())
    assert "eigenvalue-fluctuations" in REGISTRY
    assert len(res.checks) == 3 and all(c.source for c in res.checks)
    assert len(res.arrays["lambda_max"]) == 12 and np.all(res.arrays["lambda_max"] > 0)
    assert res.metrics["better_fit"] in ("gumbel", "tracy_widom")
    assert "top_eigenvalue" in res.figures


def test_quick_preset_passes_its_checks():
    # the tour's configuration (quick preset), ~20 s
    cfg = resolve_config(hf.FluctuationsConfig, hf.PRESETS, "quick")
    res = hf.run(cfg, RunContext())
    failed = [f"{c.name}: {c.measured}" for c in res.checks if not c.passed]
    assert not failed, failed
