"""k-winners-take-all and the modern-Hopfield attractor layer."""

import pytest
import torch

from overparam.memory import HopfieldAttractor, KWinners


@pytest.mark.parametrize("training", [True, False])
def test_kwinners_keeps_exactly_k(training):
    torch.manual_seed(0)
    layer = KWinners(50, 7, boost_strength=1.5)
    layer.train(training)
    for _ in range(3):
        x = torch.randn(32, 50) + 3.0    # all positive-ish, so no winner is an exact zero
        out = layer(x)
        assert torch.all((out != 0).sum(dim=1) == 7)
        kept = out != 0
        assert torch.equal(out[kept], x[kept])   # winners pass unchanged


def test_kwinners_without_boost_keeps_the_k_largest():
    layer = KWinners(10, 3, boost_strength=0.0)
    x = torch.randn(5, 10)
    out = layer(x)
    top = x.topk(3, dim=1).indices
    assert torch.equal(torch.sort((out != 0).nonzero()[:, 1].reshape(5, 3), dim=1).values,
                       torch.sort(top, dim=1).values)


def test_kwinners_gradient_reaches_winners_only():
    layer = KWinners(20, 4, boost_strength=0.0)   # fixed ranking, so the mask can be recomputed below
    x = torch.randn(8, 20, requires_grad=True)
    layer(x).sum().backward()
    winners = layer.mask(x) != 0
    assert torch.all(x.grad[winners] == 1) and torch.all(x.grad[~winners] == 0)


def test_kwinners_boosting_spreads_wins():
    torch.manual_seed(1)
    bias = torch.linspace(0, 1, 40)          # without boosting the same units always win
    plain, boosted = KWinners(40, 4, boost_strength=0.0), KWinners(40, 4, boost_strength=10.0, duty_cycle_period=200)
    for layer in (plain, boosted):
        for _ in range(50):
            layer(torch.randn(16, 40) * 0.01 + bias)
    assert int((plain.duty_cycle > 0).sum()) <= 6
    assert int((boosted.duty_cycle > 0).sum()) > 20
    assert plain.duty_cycle.sum().item() == pytest.approx(4.0, rel=1e-4)   # k winners per example


def test_hopfield_converges_to_stored_pattern_from_corrupted_one():
    torch.manual_seed(0)
    dim, n = 64, 30
    X = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    layer = HopfieldAttractor(dim, n, beta=20.0, steps=3, patterns=X)
    target = torch.arange(10)
    noisy = torch.nn.functional.normalize(X[target] + 0.3 * torch.randn(10, dim) / dim ** 0.5, dim=1)
    assert torch.all((noisy @ X.T).diagonal(0) < 1)
    with torch.no_grad():
        out = layer(noisy)
    cos = torch.nn.functional.cosine_similarity(out, X[target], dim=1)
    assert torch.all(cos > 0.9999), cos
    assert torch.equal((out @ X.T).argmax(dim=1), target)
    # a low beta averages instead of retrieving (metastable state): the attractor's sharpness matters
    soft = HopfieldAttractor(dim, n, beta=0.5, patterns=X)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(soft(noisy), X[target], dim=1).max() < 0.9


def test_hopfield_patterns_and_beta_are_learnable():
    layer = HopfieldAttractor(8, 5, beta=2.0, learn_beta=True)
    layer(torch.randn(3, 8)).pow(2).sum().backward()
    assert layer.patterns.grad is not None and layer.log_beta.grad is not None
    assert layer.beta.item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        KWinners(5, 6)
