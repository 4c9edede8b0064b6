"""Pruning masks, IMP and rewinding (overparam.interventions.prune): exact answers on small cases."""

import copy
import math

import pytest
import torch

from overparam.interventions.prune import (after_each_step, apply_masks, count_kept, dense_masks,
                                           fit_masked_ensemble, fraction_remaining, iterative_magnitude_pruning,
                                           magnitude_prune, prunable_names, random_masks_like, random_prune,
                                           reinitialize, rewind, snapshot, stack_masks, train_masked)
from overparam.models import MLP, seeded
from overparam.train import Ensemble, TrainConfig, train

torch.set_num_threads(1)


def _data(n=64, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()


def _net(seed=0):
    return seeded(lambda: MLP(6, [16, 8], 3), seed)


def test_prunable_names_exclude_biases_by_default():
    net = _net()
    assert prunable_names(net) == ["net.0.weight", "net.2.weight", "net.4.weight"]
    assert len(prunable_names(net, include_bias=True)) == 6


@pytest.mark.parametrize("opt", [dict(optimizer="sgd", momentum=0.9, weight_decay=1e-2),
                                 dict(optimizer="adam", weight_decay=1e-2), dict(optimizer="gd", momentum=0.5)])
def test_masks_stay_applied_through_training(opt):
    X, y = _data()
    net = _net()
    masks = random_prune(dense_masks(net), 0.6, generator=torch.Generator().manual_seed(1))
    before = snapshot(net)
    cfg = TrainConfig(lr=0.05, batch_size=16, steps=30, **opt)
    hist = train_masked(net, masks, X, y, cfg, n_classes=3)
    assert not hist.diverged
    for name, p in net.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0.0), name                      # exactly zero
            assert not torch.equal(p[masks[name]], before[name][masks[name]])   # the kept weights trained
    # hooks are gone: plain training afterwards moves the pruned entries again
    train(net, X, y, TrainConfig(lr=0.05, batch_size=16, steps=3, **opt), n_classes=3)
    assert any(bool((p[~masks[n]] != 0).any()) for n, p in net.named_parameters() if n in masks)


def test_held_weights_stay_exact_with_weight_decay():
    X, y = _data()
    net = _net()
    masks = random_prune(dense_masks(net), 0.5, generator=torch.Generator().manual_seed(2))
    held = {n: p.detach().clone() for n, p in net.named_parameters() if n in masks}
    train_masked(net, masks, X, y, TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.1, steps=20, batch_size=16),
                 n_classes=3, held=held)
    for n, p in net.named_parameters():
        if n in masks:
            assert torch.equal(p[~masks[n]], held[n][~masks[n]])


def test_masks_stay_applied_in_the_ensemble_engine():
    X, y = _data()
    nets = [_net(s) for s in range(3)]
    per = [random_prune(dense_masks(m), f, generator=torch.Generator().manual_seed(s))
           for s, (m, f) in enumerate(zip(nets, (0.0, 0.5, 0.9)))]
    ens = Ensemble(nets)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, steps=25)
    tr = fit_masked_ensemble(ens, stack_masks(per), X, y, cfg, {"train": (X, y)}, 3, eval_every=5,
                             snapshot_steps=(0, 7))
    assert tr.step == [0, 5, 10, 15, 20, 25]
    assert tr.error["train"].shape == (6, 3)
    for r in range(3):
        for n, m in per[r].items():
            assert torch.all(ens.params[n][r][~m] == 0.0)
            # the last step's gradients were masked too (also on the engine's hand-derived MLP path)
            assert torch.all(ens.params[n].grad[r][~m] == 0.0)
        assert sum(float(ens.params[n].grad[r][m].abs().sum()) for n, m in per[r].items()) > 0
    assert set(tr.snapshots) == {0, 7}
    # the snapshot after 7 steps is exactly the state of a 7-step run
    ens7 = Ensemble([_net(s) for s in range(3)])
    fit_masked_ensemble(ens7, stack_masks(per), X, y, TrainConfig(**{**cfg.__dict__, "steps": 7}), {}, 3, 100)
    for n in ens7.params:
        assert torch.equal(ens7.params[n], tr.snapshots[7][n])


def test_after_each_step_counts_only_its_optimizer():
    X, y = _data()
    net, other = _net(0), _net(1)
    seen = []
    with after_each_step(net, seen.append):
        train(net, X, y, TrainConfig(lr=0.01, batch_size=16, steps=9), n_classes=3)
        train(other, X, y, TrainConfig(lr=0.01, batch_size=16, steps=4), n_classes=3)
    assert seen == list(range(1, 10))


def test_pruning_fractions_are_exact_over_rounds():
    net = _net()
    masks = dense_masks(net)
    kept = {n: m.numel() for n, m in masks.items()}   # 96, 128, 24
    out = "net.4.weight"
    for _ in range(5):
        masks = magnitude_prune(net, masks, 0.2, "global", {out: 0.1})
        pool = kept["net.0.weight"] + kept["net.2.weight"]
        pool -= math.floor(0.2 * pool + 0.5)
        kept[out] -= math.floor(0.1 * kept[out] + 0.5)
        assert int(masks[out].sum()) == kept[out]
        assert int(masks["net.0.weight"].sum() + masks["net.2.weight"].sum()) == pool
        kept["net.0.weight"], kept["net.2.weight"] = int(masks["net.0.weight"].sum()), int(masks["net.2.weight"].sum())
    layer = dense_masks(net)
    for _ in range(3):
        prev = {n: int(m.sum()) for n, m in layer.items()}
        layer = magnitude_prune(net, layer, 0.3, "layerwise")
        for n, m in layer.items():
            assert int(m.sum()) == prev[n] - math.floor(0.3 * prev[n] + 0.5)
    rnd = random_prune(dense_masks(net), 0.25, "layerwise", generator=torch.Generator().manual_seed(0))
    assert {n: int(m.sum()) for n, m in rnd.items()} == {"net.0.weight": 72, "net.2.weight": 96, "net.4.weight": 18}
    like = random_masks_like(layer, torch.Generator().manual_seed(3))
    assert {n: int(m.sum()) for n, m in like.items()} == {n: int(m.sum()) for n, m in layer.items()}
    assert any(not torch.equal(like[n], layer[n]) for n in layer)
    assert count_kept(layer)[1] == 248
    assert fraction_remaining(dense_masks(net)) == 1.0


def test_magnitude_pruning_removes_the_smallest_remaining_weights():
    w = {"a": torch.tensor([[0.5, -0.1], [0.3, -2.0]])}
    m = magnitude_prune(w, {"a": torch.ones(2, 2, dtype=torch.bool)}, 0.5)
    assert m["a"].tolist() == [[True, False], [False, True]]
    # already-pruned entries are not counted again, whatever their value
    m2 = magnitude_prune({"a": torch.tensor([[0.5, 9.0], [0.3, -2.0]])}, m, 0.5)
    assert m2["a"].tolist() == [[False, False], [False, True]]


def test_global_and_layerwise_differ_on_a_hand_made_case():
    w = {"big": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "small": torch.tensor([[0.1, 0.2, 0.3, 0.4]])}
    full = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    g = magnitude_prune(w, full, 0.5, "global")        # the 4 smallest of 8: all of "small"
    assert g["big"].all() and not g["small"].any()
    lw = magnitude_prune(w, full, 0.5, "layerwise")    # half of each layer
    assert lw["big"].tolist() == [[False, False, True, True]]
    assert lw["small"].tolist() == [[False, False, True, True]]
    own = magnitude_prune(w, full, 0.5, "global", {"small": 0.25})   # "small" at its own rate
    assert int(own["small"].sum()) == 3 and own["small"][0, 0].item() is False
    assert own["big"].tolist() == [[False, False, True, True]]       # the global pool is "big" alone now
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(w, full, 0.5, "per-neuron")
    with pytest.raises(ValueError, match="layer_fractions"):
        magnitude_prune(w, full, 0.5, "global", {"nope": 0.1})


def test_rewind_restores_bit_for_bit():
    X, y = _data()
    net = _net()
    state = snapshot(net)
    train(net, X, y, TrainConfig(lr=0.1, steps=10, batch_size=16), n_classes=3)
    masks = magnitude_prune(net, dense_masks(net), 0.5)
    rewind(net, state, masks)
    for n, p in net.state_dict().items():
        expected = state[n] * masks[n] if n in masks else state[n]
        assert torch.equal(p, expected)
    rewind(net, state)
    assert all(torch.equal(p, state[n]) for n, p in net.state_dict().items())


def test_imp_late_rewinding_restores_the_step_k_weights_bit_for_bit():
    X, y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, steps=20)
    build = lambda: MLP(6, [16, 8], 3)  # noqa: E731
    res = iterative_magnitude_pruning(build, 3, X, y, cfg, rounds=2, fraction=0.2, rewind_step=7, n_classes=3)
    ref = seeded(build, 3)
    train(ref, X, y, TrainConfig(**{**cfg.__dict__, "steps": 7}), n_classes=3)
    assert all(torch.equal(res.rewind_state[n], p) for n, p in ref.state_dict().items())
    assert [r.level for r in res.rounds] == [0, 1, 2]
    assert res.rounds[0].remaining == 1.0
    assert res.rounds[2].remaining == pytest.approx(count_kept(res.rounds[2].masks)[0] / 248)
    for n, p in res.final_model.named_parameters():
        if n in res.rounds[2].masks:
            assert torch.all(p[~res.rounds[2].masks[n]] == 0)
    init = iterative_magnitude_pruning(build, 3, X, y, cfg, rounds=1, n_classes=3)
    assert all(torch.equal(init.rewind_state[n], p) for n, p in seeded(build, 3).state_dict().items())
    with pytest.raises(ValueError, match="rewind_step"):
        iterative_magnitude_pruning(build, 3, X, y, cfg, rounds=1, rewind_step=50, n_classes=3)


def test_reinitialize_keeps_the_mask_and_redraws_the_weights():
    net = _net(0)
    masks = magnitude_prune(net, dense_masks(net), 0.7)
    fresh = reinitialize(lambda: MLP(6, [16, 8], 3), 99, masks)
    for n, p in fresh.named_parameters():
        if n in masks:
            assert torch.all(p[~masks[n]] == 0)
            assert not torch.equal(p[masks[n]], dict(net.named_parameters())[n][masks[n]])
    same = apply_masks(copy.deepcopy(net), masks)
    assert torch.equal(same.net[0].weight, net.net[0].weight * masks["net.0.weight"])
