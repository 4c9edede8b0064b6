"""The hand-derived stacked-MLP step against autograd (its ground truth), and the engine's use of it."""

import numpy as np
import pytest
import torch

from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train
from overparam.train import fused
from overparam.train.ensemble import Ensemble, train_ensemble
from overparam.train.steps import replica_losses
from overparam.train.fused import StackedMLPStep


def _stack(widths, out, bias, R=3, d=5):
    models = [seeded(lambda: MLP(d, widths, out, bias=bias), s) for s in range(R)]
    return Ensemble(models, torch.float64)


def _autograd(ens, x, y, loss, n_classes):
    params = {k: v.detach().clone().requires_grad_(True) for k, v in ens.params.items()}
    ens_copy = Ensemble.__new__(Ensemble)
    ens_copy.__dict__.update(ens.__dict__, params=params)
    losses = replica_losses(loss, ens_copy.forward(x, shared=False), y, n_classes)
    losses.sum().backward()
    return losses.detach(), {k: p.grad for k, p in params.items()}


@pytest.mark.parametrize("widths", [[], [7], [7, 4, 6]])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss, out, n_classes", [("cross_entropy", 4, 4), ("mse", 4, 4), ("mse", 2, None),
                                                  ("mse", 1, None)])
def test_gradients_equal_autograd(widths, bias, loss, out, n_classes):
    ens = _stack(widths, out, bias)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 5, generator=g, dtype=torch.float64)
    if n_classes is not None:
        y = torch.randint(0, n_classes, (3, 11), generator=g)
    else:
        y = torch.randn(3, 11, *([out] if out > 1 else []), generator=g, dtype=torch.float64)
    ref_losses, ref_grads = _autograd(ens, x, y, loss, n_classes)
    layers = [(w, b) for w, b, _ in ens.mlp_layers]
    losses = StackedMLPStep(ens.params, layers, loss, n_classes).step(x, y)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-12, atol=1e-14)
    assert set(ref_grads) == set(ens.params)
    for k, p in ens.params.items():
        torch.testing.assert_close(p.grad, ref_grads[k], rtol=1e-12, atol=1e-14)


def test_relu_kink_gets_zero_gradient_like_autograd():
    """A unit whose pre-activation is exactly 0 passes no gradient (ReLU'(0) = 0, autograd's choice)."""
    ens = _stack([3], 2, True, R=1, d=2)
    with torch.no_grad():
        ens.params["net.0.weight"].zero_()
        ens.params["net.0.bias"].zero_()
    x, y = torch.randn(1, 4, 2, dtype=torch.float64), torch.tensor([[0, 1, 1, 0]])
    _, ref = _autograd(ens, x, y, "cross_entropy", 2)
    StackedMLPStep(ens.params, [(w, b) for w, b, _ in ens.mlp_layers], "cross_entropy", 2).step(x, y)
    assert torch.all(ens.params["net.0.weight"].grad == 0) and torch.all(ref["net.0.weight"] == 0)


def test_supports_only_relu_mlps_and_known_losses():
    assert fused.supports(MLP(3, [4], 2), "cross_entropy")
    assert fused.supports(MLP(3, [4], 2), "mse")
    assert not fused.supports(MLP(3, [4], 2, activation="tanh"), "cross_entropy")
    assert not fused.supports(torch.nn.Sequential(torch.nn.Linear(3, 2)), "cross_entropy")
    with pytest.raises(ValueError, match="unknown loss"):
        StackedMLPStep({}, [], "hinge", None)


def test_engine_uses_the_fused_step_for_relu_mlps(monkeypatch):
    calls = []
    original = StackedMLPStep.step
    monkeypatch.setattr(StackedMLPStep, "step", lambda self, x, y: (calls.append(1), original(self, x, y))[1])
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=10, epochs=1)
    train_ensemble(lambda: MLP(4, [5], 3), [0, 1], X, y, cfg, n_classes=3)
    assert len(calls) == 2
    train_ensemble(lambda: MLP(4, [5], 3, activation="tanh"), [0, 1], X, y, cfg, n_classes=3)
    assert len(calls) == 2  # tanh goes through autograd


def test_gradient_hooks_on_the_stack_keep_the_autograd_path():
    from overparam.train.ensemble import fit_ensemble
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    ens = Ensemble([seeded(lambda: MLP(4, [5], 3), s) for s in range(2)])
    before = ens.params["net.0.weight"].detach().clone()
    before_out = ens.params["net.2.weight"].detach().clone()
    ens.params["net.0.weight"].register_hook(lambda g: torch.zeros_like(g))   # freeze the first layer
    fit_ensemble(ens, X, y, TrainConfig(optimizer="sgd", lr=0.1, batch_size=10, epochs=2), n_classes=3)
    assert torch.equal(ens.params["net.0.weight"].detach(), before)
    assert not torch.equal(ens.params["net.2.weight"].detach(), before_out)   # the rest trained


@pytest.mark.parametrize("activation, regression", [("relu", True), ("tanh", False)])
def test_regression_and_autograd_fallback_follow_sequential_training(activation, regression):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(30, 2, generator=g, dtype=torch.float64) if regression else torch.randint(0, 3, (30,), generator=g)
    out, n_classes, loss = (2, None, "mse") if regression else (3, 3, "cross_entropy")
    build = lambda: MLP(4, [6, 6], out, activation=activation)  # noqa: E731
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=10, epochs=3, loss=loss, dtype="float64")
    ens, hist = train_ensemble(build, [0, 1], X, y, cfg, n_classes=n_classes, data_seeds=[5, 6])
    for r, s in enumerate([0, 1]):
        model = seeded(build, s)
        ref = train(model, X, y, TrainConfig(**{**cfg.__dict__, "seed": 5 + r}), n_classes=n_classes)
        np.testing.assert_allclose(hist.curves("train_loss")[:, r], ref.train_loss, rtol=1e-9)
        for p, q in zip(ens.replica(r).parameters(), model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
