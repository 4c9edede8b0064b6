"""Padded width families against their ground truth: each narrow MLP trained alone with train()."""

import numpy as np
import pytest
import torch

from overparam.models import MLP, seeded
from overparam.train import TrainConfig, train
from overparam.train.widths import group_widths, pad_mlp, train_mlp_widths, unpad_mlp


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_padding_preserves_the_function_and_unpads_exactly():
    narrow = seeded(lambda: MLP(5, [3, 3], 3), 0)
    padded, masks = pad_mlp(narrow, 9)
    x = torch.randn(7, 5)
    torch.testing.assert_close(padded(x), narrow(x))
    assert int(masks["net.2.weight"].sum()) == 9 and masks["net.2.weight"].shape == (9, 9)
    back = unpad_mlp(padded.state_dict(), narrow)
    assert all(torch.equal(p, q) for p, q in zip(back.parameters(), narrow.parameters()))


@pytest.mark.parametrize("cfg", [
    TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=8, epochs=3, dtype="float64"),
    TrainConfig(optimizer="adam", lr=0.01, weight_decay=1e-3, batch_size=10, epochs=3, dtype="float64"),
])
@pytest.mark.parametrize("activation", ["relu", "tanh"])  # relu pads without masks, tanh needs them
def test_width_family_equals_separate_training(cfg, activation):
    X, y = _data()
    widths, seeds = [2, 4, 7], {2: [0, 1], 4: [2, 3], 7: [4, 5]}
    runs = train_mlp_widths(5, widths, 3, seeds, X, y, cfg, X, y, n_classes=3, groups=[[2, 4, 7]],
                            activation=activation)
    for h in widths:
        for r, s in enumerate(seeds[h]):
            alone = seeded(lambda: MLP(5, [h, h], 3, activation=activation), s)
            ref = train(alone, X, y, cfg, X, y, n_classes=3)
            np.testing.assert_allclose(runs[h].history.curves("train_loss")[:, r], ref.train_loss, rtol=1e-9)
            for p, q in zip(runs[h].models[r].parameters(), alone.parameters()):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def test_grouping_covers_all_widths_contiguously():
    widths = [2, 4, 8, 12, 16, 24, 32, 40, 47, 54, 61, 70, 85, 100, 150, 200, 300]
    groups = group_widths(widths, 1, 40, 10, 2)
    assert [w for g in groups for w in g] == widths
    assert 1 < len(groups) < len(widths)        # small widths merge, the largest stand alone
    assert groups[-1] == [300]
    assert group_widths(widths, 1, 40, 10, 2, overhead=0) == [[w] for w in widths]
    assert group_widths(widths, 1, 40, 10, 2, overhead=1e12) == [widths]
