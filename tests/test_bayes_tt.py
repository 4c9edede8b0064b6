"""BayesianTTLinear (rank-adaptive priors, mean-field VI) and the tt-rank-selection study."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from overparam.config import ConfigError, resolve_config
from overparam.models.bayes_tt import (BayesianTTLinear, elbo_loss, gaussian_kl, mc_predict, model_kl,
                                       set_sampling, update_lambdas_)
from overparam.models.tt import TTLinear, tt_matmul, tt_to_matrix
from overparam.studies import tt_rank_selection as study
from overparam.studies.base import RunContext


def _dense_from_cores(cores, in_modes, out_modes):
    """Ground truth in float64: every entry of W (out, in) as the product of core slices, by brute force."""
    cores = [c.detach().double() for c in cores]
    W = torch.zeros(math.prod(out_modes), math.prod(in_modes), dtype=torch.float64)
    for ii in itertools.product(*[range(m) for m in in_modes]):
        for jj in itertools.product(*[range(n) for n in out_modes]):
            v = torch.ones(1, 1, dtype=torch.float64)
            for core, i, j in zip(cores, ii, jj):
                v = v @ core[:, i, j, :]
            row = int(np.ravel_multi_index(jj, out_modes))
            col = int(np.ravel_multi_index(ii, in_modes))
            W[row, col] = v.item()
    return W


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return BayesianTTLinear([2, 3, 2], [3, 2, 2], [1, 3, 2, 1]).double()


def test_contraction_matches_dense_weight(layer):
    W = _dense_from_cores(layer.means, layer.in_modes, layer.out_modes)
    torch.testing.assert_close(layer.full_weight().detach(), W)
    torch.testing.assert_close(tt_to_matrix([c.detach() for c in layer.means]).T, W)
    x = torch.randn(7, 12, dtype=torch.float64)
    set_sampling(layer, False)
    torch.testing.assert_close(layer(x), x @ W.T + layer.bias)
    # a sampled forward is the dense product of the sampled cores
    torch.manual_seed(3)
    cores = layer.sample_cores()
    torch.testing.assert_close(tt_matmul(x, cores),
                               x @ _dense_from_cores(cores, layer.in_modes, layer.out_modes).T)


def test_to_deterministic_is_the_posterior_mean_ttlinear(layer):
    det = layer.to_deterministic()
    assert isinstance(det, TTLinear) and det.ranks == layer.ranks
    x = torch.randn(5, 12, dtype=torch.float64)
    set_sampling(layer, False)
    torch.testing.assert_close(det(x), layer(x))
    assert det.parameter_count() == layer.parameter_count()
    assert det.flops(batch=5) == layer.flops(batch=5)


def test_ranks_are_clipped_like_ttlinear():
    b = BayesianTTLinear([2, 2], [2, 2], 10)
    assert b.ranks == TTLinear([2, 2], [2, 2], 10).ranks == [1, 4, 1]


def test_kl_closed_form_matches_torch_and_monte_carlo():
    torch.manual_seed(1)
    mu = torch.randn(50, dtype=torch.float64)
    log_sigma = 0.3 * torch.randn(50, dtype=torch.float64) - 0.5
    v = torch.rand(50, dtype=torch.float64) + 0.2
    q = torch.distributions.Normal(mu, log_sigma.exp())
    p = torch.distributions.Normal(torch.zeros(50, dtype=torch.float64), v.sqrt())
    exact = torch.distributions.kl_divergence(q, p).sum()
    torch.testing.assert_close(gaussian_kl(mu, log_sigma, v), exact)
    g = torch.Generator().manual_seed(0)
    z = mu + log_sigma.exp() * torch.randn(200_000, 50, dtype=torch.float64, generator=g)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(1).mean()
    assert float(mc) == pytest.approx(float(exact), rel=0.02)


def test_layer_kl_uses_the_rank_slice_prior(layer):
    with torch.no_grad():
        layer.log_lambdas[0].copy_(torch.log(torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)))
        layer.log_lambdas[1].copy_(torch.log(torch.tensor([3.0, 0.1], dtype=torch.float64)))
    lam = [[1.0], [0.5, 2.0, 1.0], [3.0, 0.1], [1.0]]
    total = 0.0
    for k, (mu, ls) in enumerate(zip(layer.means, layer.log_sigmas)):
        r0, m, n, r1 = mu.shape
        for a, i, j, b in itertools.product(range(r0), range(m), range(n), range(r1)):
            std = torch.tensor(lam[k][a] * lam[k + 1][b], dtype=torch.float64).sqrt()
            q = torch.distributions.Normal(mu[a, i, j, b].detach(), ls[a, i, j, b].detach().exp())
            p = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), std)
            total += float(torch.distributions.kl_divergence(q, p))
    assert float(layer.kl().detach()) == pytest.approx(total, rel=1e-10)


def test_reparameterized_samples_have_the_posterior_mean_and_std():
    torch.manual_seed(2)
    b = BayesianTTLinear([2, 2], [2, 3], 2).double()
    with torch.no_grad():
        b.log_sigmas[0].uniform_(-2.0, 0.0)
    g = torch.Generator().manual_seed(5)
    draws = torch.stack([b.sample_cores(generator=g)[0].detach() for _ in range(20000)])
    torch.testing.assert_close(draws.mean(0), b.means[0].detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), b.log_sigmas[0].detach().exp(), atol=0.02, rtol=0.03)
    # the draw is differentiable in mean and log-sigma (the reparameterization trick)
    b.sample_cores()[0].sum().backward()
    assert b.means[0].grad is not None and b.log_sigmas[0].grad is not None


def test_pruning_removes_exactly_the_zeroed_slices():
    torch.manual_seed(4)
    b = BayesianTTLinear([2, 3, 2], [2, 2, 3], [1, 4, 3, 1]).double()
    dead1, dead2 = [1, 3], [0]
    with torch.no_grad():
        b.means[0][..., dead1] = 0.0          # slices 1 and 3 of rank r1 ...
        b.means[1][dead1] = 0.0               # ... on both sides
        b.means[1][..., dead2] = 0.0          # slice 0 of rank r2
        b.means[2][dead2] = 0.0
        b.log_lambdas[0][dead1] = -20.0
        b.log_lambdas[1][dead2] = -20.0
    masks = b.keep_masks(threshold=1e-3)
    assert masks[0].tolist() == [True, False, True, False] and masks[1].tolist() == [False, True, True]
    assert b.effective_ranks(1e-3) == [1, 2, 2, 1]
    p = b.pruned(1e-3)
    assert p.ranks == [1, 2, 2, 1] and [tuple(m.shape) for m in p.means] == [(1, 2, 2, 2), (2, 3, 2, 2),
                                                                             (2, 2, 3, 1)]
    torch.testing.assert_close(p.full_weight(), b.full_weight())        # the cut slices carried nothing
    assert p.parameter_count() == b.parameter_count([1, 2, 2, 1]) < b.parameter_count()
    det = b.to_deterministic(threshold=1e-3)
    assert det.ranks == [1, 2, 2, 1]
    torch.testing.assert_close(det.full_weight().T, b.full_weight())
    # absolute thresholds: only slices below the cut go; at least one slice always stays
    assert b.effective_ranks(1e-5, relative=False) == [1, 2, 2, 1]
    assert b.effective_ranks(1e6, relative=False) == [1, 1, 1, 1]


@pytest.mark.parametrize("hyperprior", ["none", "log-uniform", "gamma"])
def test_closed_form_lambda_update_is_the_maximizer(hyperprior):
    torch.manual_seed(6)
    b = BayesianTTLinear([3, 2], [2, 4], 3, hyperprior=hyperprior, hyper_a=2.0, hyper_b=0.5).double()
    with torch.no_grad():
        b.log_sigmas[0].uniform_(-3, -1)
        b.log_sigmas[1].uniform_(-3, -1)
    b.update_lambdas_()
    objective = b.kl() - b.log_hyperprior()          # what the lambdas minimize
    (grad,) = torch.autograd.grad(objective, b.log_lambdas[0])
    assert grad.abs().max() < 1e-9
    with torch.no_grad():                            # and it is a minimum: a nudge either way is worse
        for delta in (-0.1, 0.1):
            b.log_lambdas[0] += delta
            assert float(b.kl() - b.log_hyperprior()) > float(objective)
            b.log_lambdas[0] -= delta


def _tiny_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (X @ w).argmax(1)
    return X, y


def test_elbo_improves_during_training():
    X, y = _tiny_problem()
    torch.manual_seed(0)
    net = nn.Sequential(BayesianTTLinear([2, 4], [4, 4], 4), nn.ReLU(), BayesianTTLinear([4, 4], [3, 1], 3))
    before = study.elbo_per_example(net, X, y, len(X), samples=16)
    hist = study.fit(net, X, y, steps=300, lr=0.01, batch_size=50, seed=0,
                     loss_fn=lambda m, out, yb, step: elbo_loss(m, out, yb, len(X)),
                     params=[p for n, p in net.named_parameters() if "log_lambdas" not in n],
                     after_step=update_lambdas_,
                     record=lambda step: study.elbo_per_example(net, X, y, len(X)), record_every=100)
    after = study.elbo_per_example(net, X, y, len(X), samples=16)
    assert after > before + 0.5
    assert len(hist) == 4 and hist[-1] > hist[0]
    probs = mc_predict(net, X, samples=8)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(X)))
    assert float((probs.argmax(1) == y).float().mean()) > 0.8
    assert float(model_kl(net)) > 0


# --------------------------------------------------------------------------- study checks
def _results(ranks=([1, 2, 1, 1], [1, 2, 1]), acc=(0.97, 0.96, 0.96), nll=(0.16, 0.13), ece=(0.02, 0.02),
             auroc=(0.9, 0.92), full_acc=0.965):
    """Synthetic study results: acc = (tt, bayes pruned, dense), nll/ece/auroc = (tt, bayes)."""
    tt_ranks = [[1, 16, 16, 1], [1, 16, 1]]
    return {
        "dense": {"params": 19210, "accuracy": acc[2], "nll": 0.12, "ece": 0.015, "auroc_mean": 0.92},
        "tt": {"params": 11018, "ranks": tt_ranks, "accuracy": acc[0], "nll": nll[0], "ece": ece[0],
               "auroc_mean": auroc[0]},
        "bayes_full": {"params": 11018, "accuracy": full_acc, "nll": nll[1], "ece": ece[1], "auroc_mean": auroc[1],
                       "posterior_mean_accuracy": full_acc},
        "bayes": {"params": 618 if ranks[0][1] < 16 else 11018, "ranks": list(ranks), "accuracy": acc[1],
                  "nll": nll[1], "ece": ece[1], "auroc_mean": auroc[1], "posterior_mean_accuracy": acc[1]},
    }


def _summary(**kw):
    cfg = resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick")
    history = kw.pop("history", [(0, -40.0), (100, -1.0)])
    res = _results(**kw)
    for r in res.values():
        r.setdefault("reliability", {"confidence": [0.5], "accuracy": [0.5], "counts": [1]})
    return {c.name: c.passed for c in study._summarize(cfg, res, history).checks}


def test_checks_pass_on_the_published_shape():
    assert all(_summary().values())


def test_checks_fail_without_it():
    names = list(_summary())
    no_shrink = _summary(ranks=([1, 16, 16, 1], [1, 16, 1]))
    assert not no_shrink[names[0]]
    assert not _summary(acc=(0.97, 0.90, 0.96))[names[1]]                 # accuracy lost
    assert not _summary(full_acc=0.99)[names[2]]                          # pruning cost accuracy
    assert not _summary(nll=(0.13, 0.16))[names[3]]
    assert not _summary(ece=(0.02, 0.05))[names[4]]
    assert not _summary(auroc=(0.95, 0.9))[names[5]]
    assert not _summary(history=[(0, -1.0), (100, -2.0)])[names[6]]


def test_config_validation():
    with pytest.raises(ConfigError, match="hidden_modes"):
        resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick", sets={"hidden_modes": "4,64"})
    with pytest.raises(ConfigError, match="data_dir"):
        resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick", sets={"dataset": "mnist"})
    resolve_config(study.TTRankSelectionConfig, study.PRESETS, "paper")
    cfg = resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick", sets={"in_modes": "8,8,1"})
    with pytest.raises(ConfigError, match="in_modes"):
        study.run(resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick",
                                 sets={"in_modes": "4,4,2", "steps": 1, "n_train": 50,
                                       "n_test": 50}), RunContext())
    assert cfg.in_modes == [8, 8, 1]


def test_tiny_end_to_end_run():
    cfg = resolve_config(study.TTRankSelectionConfig, study.PRESETS, "quick",
                         sets={"n_train": 200, "n_test": 100, "steps": 40, "max_rank": 4, "mc_samples": 3,
                               "hidden_modes": "2,4,4"})
    res = study.run(cfg, RunContext())
    assert len(res.checks) == 7
    m = res.metrics
    assert set(m["models"]) == {"dense", "tt", "bayes_full", "bayes"}
    for key in ("accuracy", "nll", "ece", "auroc_gaussian", "auroc_shuffled_pixels"):
        assert np.isfinite(m["models"]["bayes"][key])
    assert m["max_ranks"] == [[1, 4, 4, 1], [1, 4, 1]]
    assert set(res.figures) == {"reliability", "ranks", "ood_entropy"}
    assert m["compression_vs_dense"] > 1
    sweep = m["threshold_sweep"]
    assert [s["threshold"] for s in sweep] == list(study.SWEEP_THRESHOLDS)
    assert sweep[0]["ranks"] == m["max_ranks"]                  # threshold 0 cuts nothing
    assert all(a["params"] >= b["params"] for a, b in zip(sweep, sweep[1:]))   # higher threshold, smaller net
