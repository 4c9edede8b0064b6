"""The vmap ensemble against its ground truth: the same replicas trained one by one with train()."""

import numpy as np
import pytest
import torch

from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train
from overparam.train.ensemble import train_ensemble


def _data(n=48, d=6, k=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def build():
    return MLP(6, [16, 16], 3)


@pytest.mark.parametrize("cfg, own_order", [
    (TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=10, epochs=3, eval_every=5), True),
    (TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=2, schedule="cosine"), False),
    (TrainConfig(optimizer="adam", lr=0.01, weight_decay=1e-4, batch_size=12, epochs=3), True),
    (TrainConfig(optimizer="gd", lr=0.2, steps=15, eval_every=5), False),
    (TrainConfig(optimizer="sgd", lr=0.05, momentum=0.5, batch_size=8, epochs=2, dtype="float64"), True),
])
def test_trajectories_equal_sequential_training(cfg, own_order):
    X, y = _data()
    Xt, yt = _data(n=20)
    seeds, data_seeds = [3, 4, 5], [10, 11, 12]
    ens, hist = train_ensemble(build, seeds, X, y, cfg, Xt, yt, n_classes=3,
                               data_seeds=data_seeds if own_order else None)
    tol = dict(rtol=1e-9, atol=1e-10) if cfg.dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    for r, seed in enumerate(seeds):
        model = seeded(build, seed)
        rcfg = TrainConfig(**{**cfg.__dict__, "seed": data_seeds[r] if own_order else cfg.seed})
        ref = train(model, X, y, rcfg, Xt, yt, n_classes=3)
        assert hist.step == ref.step
        np.testing.assert_allclose(hist.curves("train_loss")[:, r], ref.train_loss, **tol)
        np.testing.assert_allclose(hist.curves("test_error")[:, r], ref.test_error, **tol)
        for p, q in zip(ens.replica(r).parameters(), model.parameters()):
            torch.testing.assert_close(p, q, **tol)


def test_one_diverging_replica_does_not_stop_the_others():
    X, y = _data()

    def fragile():  # replicas whose first draw is small get enormous weights and blow up
        model = MLP(6, [16], 3)
        if torch.rand(1).item() < 0.5:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1e30)
        return model

    flags = [seeded(lambda: (MLP(6, [16], 3), torch.rand(1))[1], s).item() < 0.5 for s in range(8)]
    assert any(flags) and not all(flags)
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=16, epochs=3)
    ens, hist = train_ensemble(fragile, list(range(8)), X, y, cfg, n_classes=3, data_seeds=list(range(8)))
    assert hist.diverged.tolist() == flags
    healthy = [r for r, f in enumerate(flags) if not f]
    final = hist.final()["train_loss"]
    assert np.isfinite(final[healthy]).all() and np.isnan(final[flags]).all()
    # the healthy replicas trained exactly as they would alone
    r = healthy[0]
    ref = train(seeded(fragile, r), X, y, TrainConfig(**{**cfg.__dict__, "seed": r}), n_classes=3)
    np.testing.assert_allclose(final[r], ref.train_loss[-1], rtol=2e-4)


def test_bad_data_seeds_length():
    X, y = _data()
    with pytest.raises(ValueError, match="data_seeds"):
        train_ensemble(build, [1, 2], X, y, TrainConfig(epochs=1), n_classes=3, data_seeds=[1])


def test_evaluation_breaks_ties_like_argmax_and_matches_evaluate():
    """All-zero weights give equal logits: the predicted class is the first (index 0), as argmax says."""
    from overparam.train.ensemble import Ensemble, evaluate_ensemble
    from overparam.train.loop import evaluate, loss_function
    X, y = _data(n=50)
    models = [seeded(build, s) for s in range(2)]
    with torch.no_grad():
        for p in models[0].parameters():
            p.zero_()
    ens = Ensemble(models)
    loss, err = evaluate_ensemble(ens, X, y, "cross_entropy", 3, batch_size=16)  # chunks of 16 rows
    assert err[0] == pytest.approx(float((y != 0).float().mean()))
    for r, m in enumerate(models):
        ref_loss, ref_err = evaluate(m, X, y, loss_function("cross_entropy", 3))
        assert loss[r] == pytest.approx(ref_loss, rel=1e-6) and err[r] == pytest.approx(ref_err)
