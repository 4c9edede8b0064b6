import copy
import math

import pytest
import torch
from torch import nn

from overparam.models import MLP, seeded
from overparam.train import TrainConfig, evaluate, loss_function, train


def _data(n=64, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return X, y


def test_full_batch_gd_equals_hand_written_gradient_descent():
    X, y = _data()
    model = seeded(lambda: MLP(5, [8], 3), 0)
    ref = copy.deepcopy(model).double()
    train(model, X, y, TrainConfig(optimizer="gd", lr=0.3, steps=5, dtype="float64"), n_classes=3)
    Xd = X.double()
    for _ in range(5):  # ground truth: w <- w - lr * grad of the mean cross-entropy
        loss = nn.functional.cross_entropy(ref(Xd), y)
        grads = torch.autograd.grad(loss, list(ref.parameters()))
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads):
                p -= 0.3 * g
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_sgd_minibatches_cover_each_example_once_per_epoch():
    # with a linear model and lr tiny, one epoch of minibatch SGD moves the weights like one full-batch step
    # scaled by the number of batches: every example appears exactly once per epoch.
    X, y = _data(n=60)
    seen = []
    model = seeded(lambda: MLP(5, [], 3), 0)
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]) if m.training else None)
    train(model, X, y, TrainConfig(optimizer="sgd", lr=1e-3, batch_size=25, epochs=2), n_classes=3)
    assert seen == [25, 25, 10, 25, 25, 10]


def test_deterministic_for_a_seed_and_seed_changes_order():
    X, y = _data()
    runs = []
    for seed in (1, 1, 2):
        model = seeded(lambda: MLP(5, [8], 3), 0)
        h = train(model, X, y, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16, epochs=3, seed=seed),
                  n_classes=3)
        runs.append((h.train_loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0] != runs[2][0]


def test_training_fits_and_evaluates_errors():
    X, y = _data(n=40)
    model = seeded(lambda: MLP(5, [64, 64], 3), 0)
    h = train(model, X, y, TrainConfig(optimizer="adam", lr=0.01, batch_size=40, epochs=300, eval_every=100),
              X, y, n_classes=3)
    assert h.step == [0, 100, 200, 300]
    assert h.train_error[-1] == 0.0 and h.train_loss[-1] < h.train_loss[0]
    loss, err = evaluate(model, X, y, loss_function("cross_entropy", 3))
    assert err == 0.0 and math.isclose(loss, h.train_loss[-1], rel_tol=1e-6)


def test_divergence_is_detected():
    X, y = _data()
    model = seeded(lambda: MLP(5, [8], 3), 0)
    h = train(model, X * 1e3, y, TrainConfig(optimizer="sgd", lr=1e6, batch_size=64, epochs=50), n_classes=3)
    assert h.diverged and h.diverged_at is not None and h.diverged_at < 50


def test_mse_on_classes_uses_one_hot_and_regression_targets():
    out = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert loss_function("mse", 2)(out, torch.tensor([0, 1])).item() == pytest.approx(0.25)
    reg = loss_function("mse", None)
    assert reg(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
