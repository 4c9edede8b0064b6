"""Step hooks: before sees the gradients on the old weights, after sees the new weights; only their optimizer counts."""

import torch

from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train
from overparam.train.ensemble import Ensemble, fit_ensemble
from overparam.train.hooks import after_each_step, before_each_step


def test_before_and_after_each_step_on_the_ensemble_engine():
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    ens = Ensemble([seeded(lambda: MLP(4, [5], 3), s) for s in range(2)])
    name = "net.0.weight"
    seen = []

    def before(step):
        seen.append(("before", step, ens.params[name].detach().clone(), ens.params[name].grad.clone()))

    def after(step):
        seen.append(("after", step, ens.params[name].detach().clone(), None))

    with before_each_step(ens.params, before), after_each_step(ens.params, after):
        fit_ensemble(ens, X, y, TrainConfig(optimizer="sgd", lr=0.1, batch_size=10, epochs=1), n_classes=3)
    assert [(w, s) for w, s, _, _ in seen] == [("before", 1), ("after", 1), ("before", 2), ("after", 2)]
    # plain SGD: after = before - lr * gradient, so the hooks bracket exactly one step
    _, _, w0, g0 = seen[0]
    torch.testing.assert_close(seen[1][2], w0 - 0.1 * g0)


def test_hooks_ignore_other_optimizers():
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    mine, other = seeded(lambda: MLP(4, [5], 3), 0), seeded(lambda: MLP(4, [5], 3), 1)
    counts = []
    with before_each_step(mine, counts.append):
        train(other, X, y, TrainConfig(optimizer="sgd", lr=0.1, batch_size=10, epochs=1), n_classes=3)
        assert counts == []
        train(mine, X, y, TrainConfig(optimizer="sgd", lr=0.1, batch_size=10, epochs=1), n_classes=3)
    assert counts == [1, 2]
