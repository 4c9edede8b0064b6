"""What the one training loop accepts besides a named loss, each against a hand-written reference loop:
custom objectives, penalties, callbacks, parameter subsets, per-replica hyperparameters, devices."""

import numpy as np
import pytest
import torch
from torch import nn

from overparam.models import MLP, seeded
from overparam.train import Callback, PerReplica, TrainConfig, fit_ensemble, train
from overparam.train.ensemble import Ensemble


def _data(n=24, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def _reference(model, X, y, cfg, loss_of, penalty=None, after=None, params=None):
    """A plain loop with the same data order as train(): the ground truth for what train() adds."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters() if params is None else params, lr=cfg.lr, momentum=cfg.momentum)
    batch, per_epoch, total = cfg.plan(len(X))
    for step in range(total):
        if step % per_epoch == 0:
            order = torch.randperm(len(X), generator=gen)
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        loss = loss_of(model(X[idx]), y[idx], step)
        if penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after is not None:
            after(model, step + 1)
    return model


CFG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=8, epochs=3, dtype="float64", seed=3)


def test_custom_objective_with_step_penalty_and_callback_follow_the_reference_loop():
    X, y = _data()
    build = lambda: MLP(4, [5], 3)  # noqa: E731

    def objective(out, target, step, model):  # a loss whose weight changes with the step, like an annealed ELBO
        return nn.functional.cross_entropy(out, target) * (1 + 0.1 * step)

    def penalty(model):
        return 1e-2 * sum(p.square().sum() for n, p in model.named_parameters() if "weight" in n)

    clipped = []

    def clip(info):  # after every update: keep the output bias in [-0.05, 0.05]
        with torch.no_grad():
            info.model.net[2].bias.clamp_(-0.05, 0.05)
        clipped.append(info.step)

    model = seeded(build, 0).double()
    train(model, X, y, CFG, loss_fn=objective, penalty=penalty, callbacks=[clip])
    ref = _reference(seeded(build, 0).double(), X, y, CFG, lambda o, t, s: objective(o, t, s, None), penalty,
                     lambda m, s: m.net[2].bias.data.clamp_(-0.05, 0.05))
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert clipped == list(range(1, 10))


def test_before_update_sees_the_gradients_and_can_change_them():
    X, y = _data()

    class ZeroFirstLayer(Callback):
        def before_update(self, info):
            info.model.net[0].weight.grad.zero_()

    model = seeded(lambda: MLP(4, [5], 3), 0).double()
    w0 = model.net[0].weight.detach().clone()
    train(model, X, y, CFG, callbacks=[ZeroFirstLayer()])
    assert torch.equal(model.net[0].weight.detach(), w0)


def test_params_subset_trains_only_those():
    X, y = _data()
    model = seeded(lambda: MLP(4, [5], 3), 0).double()
    w0, b2 = model.net[0].weight.detach().clone(), model.net[2].bias.detach().clone()
    train(model, X, y, CFG, params=[model.net[2].bias])
    assert torch.equal(model.net[0].weight.detach(), w0) and not torch.equal(model.net[2].bias.detach(), b2)


def test_bad_callback_is_a_clear_error():
    X, y = _data()
    with pytest.raises(TypeError, match="callback"):
        train(MLP(4, [5], 3).double(), X, y, CFG, callbacks=[42])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_per_replica_lr_and_weight_decay_equal_separate_training(optimizer, activation):
    X, y = _data()
    build = lambda: MLP(4, [6], 3, activation=activation)  # noqa: E731
    cfg = TrainConfig(optimizer=optimizer, lr=0.05, momentum=0.9, batch_size=8, epochs=3, dtype="float64",
                      schedule="cosine")
    lrs, wds = [0.05, 0.01, 0.2], [0.0, 1e-3, 1e-2]
    ens = Ensemble([seeded(build, s) for s in range(3)], torch.float64)
    hist = fit_ensemble(ens, X, y, cfg, n_classes=3, per_replica=PerReplica(lr=lrs, weight_decay=wds))
    for r in range(3):
        model = seeded(build, r).double()
        ref = train(model, X, y, TrainConfig(**{**cfg.__dict__, "lr": lrs[r], "weight_decay": wds[r]}), n_classes=3)
        np.testing.assert_allclose(hist.curves("train_loss")[:, r], ref.train_loss, rtol=1e-9)
        for p, q in zip(ens.replica(r).parameters(), model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def test_per_replica_penalty_weight_and_custom_loss_equal_separate_training():
    X, y = _data()
    build = lambda: MLP(4, [6], 3)  # noqa: E731
    weights = [0.0, 1e-2, 1e-1]

    def stacked_penalty(params):  # (R,): sum of squared weights of each replica
        return sum(p.square().flatten(1).sum(1) for n, p in params.items() if "weight" in n)

    def stacked_loss(out, target):  # (R,): a squared hinge per replica
        margin = out.gather(-1, target.unsqueeze(-1)) - out
        return torch.relu(1 - margin).square().mean((1, 2))

    ens = Ensemble([seeded(build, s) for s in range(3)], torch.float64)
    fit_ensemble(ens, X, y, CFG, n_classes=3, loss_fn=stacked_loss, penalty=stacked_penalty,
                 per_replica=PerReplica(penalty_weight=weights))
    for r in range(3):
        model = seeded(build, r).double()
        ref = _reference(model, X, y, CFG, lambda o, t, s: stacked_loss(o.unsqueeze(0), t.unsqueeze(0))[0],
                         lambda m, w=weights[r]: w * sum(p.square().sum() for n, p in m.named_parameters()
                                                          if "weight" in n))
        for p, q in zip(ens.replica(r).parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def test_per_replica_values_must_match_the_replicas():
    X, y = _data()
    ens = Ensemble([seeded(lambda: MLP(4, [6], 3), s) for s in range(2)], torch.float64)
    with pytest.raises(ValueError, match="3 values for 2 replicas"):
        fit_ensemble(ens, X, y, CFG, n_classes=3, per_replica=PerReplica(lr=[0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="either"):
        fit_ensemble(ens, X, y, TrainConfig(weight_decay=0.1), n_classes=3, per_replica=PerReplica(weight_decay=[0, 1]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_follows_the_models_device():
    X, y = _data()
    model = seeded(lambda: MLP(4, [5], 3), 0).double().cuda()
    hist = train(model, X, y, CFG)
    assert next(model.parameters()).is_cuda and np.isfinite(hist.train_loss[-1])
    ens = Ensemble([seeded(lambda: MLP(4, [5], 3), s).cuda() for s in range(2)], torch.float64)
    hist = fit_ensemble(ens, X, y, CFG, n_classes=3)
    assert ens.device.type == "cuda" and np.isfinite(hist.train_loss[-1]).all()
