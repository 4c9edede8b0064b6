"""sparse-responses and attractor-nets: tiny configs exercise the plumbing; quick presets are the tour's."""

import numpy as np
import pytest
import torch

from overparam.config import resolve_config
from overparam.memory.nets import AttractorMLP, KWinnersMLP, SparseResponseMLP, count, ternarize
from overparam.studies.am_common import noise_robustness, replace_entries
from overparam.models import MLP
from overparam.studies import attractor_nets as an
from overparam.studies import sparse_responses as sr
from overparam.studies.base import REGISTRY, RunContext


def test_equal_parameter_counts_by_construction():
    mlp = count(MLP(40, [64, 64], 10))
    assert count(KWinnersMLP(40, [64, 64], 10, 0.1)) == mlp
    assert count(SparseResponseMLP(40, [64, 64], 10)) == mlp
    assert count(AttractorMLP(40, 64, 10)) == mlp
    # twice wider with random sparse hidden weights: as many nonzero parameters as the dense net
    from overparam.memory.nets import mask_applier, nonzero_parameters, random_weight_masks
    q = sr.sparse_weight_density(40, 64, 2, 10)
    wide = MLP(40, [128, 128], 10)
    mask_applier(random_weight_masks(wide, q, seed=0))(wide)
    assert abs(nonzero_parameters(wide) - mlp) <= 2


def test_replace_entries_and_noise_score():
    X = torch.zeros(20, 40)
    Z = replace_entries(X, 0.25, 3.0, seed=0)
    assert torch.all((Z == 3.0).sum(dim=1) == 10)
    assert torch.equal(replace_entries(X, 0.0, 3.0, seed=0), X)

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()

    y = torch.tensor([0] * 15 + [1] * 5)
    out = noise_robustness(Const(), X, y, 3.0)
    assert out["score"] == 11 * 15 and out["max_score"] == 11 * 20


def test_ternarize_forward_values_and_straight_through_gradient():
    a = torch.tensor([-2.0, -0.7, -0.2, 0.0, 0.3, 0.9, 1.6], requires_grad=True)
    r = ternarize(a, 0.5)
    assert r.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    r.sum().backward()
    assert a.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


TINY = {"dataset": "digits", "n_train": 200, "n_test": 100, "width": 32, "epochs": 3}


def test_sparse_responses_tiny_and_failing_check():
    cfg = resolve_config(sr.SparseResponsesConfig, sr.PRESETS, "quick", sets=TINY)
    res = sr.run(cfg, RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["equal parameter counts"].passed
    assert checks["k-WTA keeps exactly k of h units"].passed
    assert res.arrays["dense_noise_accuracy"].shape == (11,)
    assert REGISTRY["sparse-responses"].run is sr.run
    # a dense net that scores better must fail the robustness check
    m = res.metrics
    res2 = {k: dict(v, noise_levels=list(res.arrays["noise_levels"]),
                    noise_accuracy=list(res.arrays[f"{k}_noise_accuracy"])) for k, v in m.items()}
    res2["dense"]["noise_score"] = res2["kwta"]["noise_score"] + 1
    assert not {c.name: c.passed for c in sr._summarize(cfg, res2).checks}["k-WTA is more noise-robust than dense"]


def test_attractor_nets_tiny():
    cfg = resolve_config(an.AttractorNetsConfig, an.PRESETS, "quick", sets=TINY)
    res = an.run(cfg, RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["equal parameter counts"].passed
    assert 0 < res.metrics["attractor"]["retrieval_sharpness"] <= 1
    assert "attractor_nets" in res.figures


def test_quick_preset_sparse_responses():
    # the tour's configuration; the robustness checks are findings and may fail, the structural ones may not.
    # (attractor-nets' quick preset, 3 x 100 epochs, is left to the tour: the tiny run covers its code.)
    res = sr.run(resolve_config(sr.SparseResponsesConfig, sr.PRESETS, "quick"), RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["equal parameter counts"].passed
    assert all(np.isfinite(v["clean_accuracy"]) for v in res.metrics.values())


def test_magnitude_masks_keep_the_largest_fraction():
    from overparam.studies import prune_redundancy as pr
    torch.manual_seed(0)
    model = MLP(10, [20], 3)
    masks = pr.magnitude_masks(model, 0.25)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            m = masks[name].bool()
            assert int(m.sum()) == round(0.25 * p.numel())
            assert p.detach().abs()[m].min() >= p.detach().abs()[~m].max()


def test_prune_redundancy_tiny():
    from overparam.studies import prune_redundancy as pr
    cfg = resolve_config(pr.PruneRedundancyConfig, pr.PRESETS, "quick",
                         sets={**TINY, "finetune_epochs": 2, "keep": 0.5})
    res = pr.run(cfg, RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["the redundant copies fit in the dense budget"].passed
    assert res.metrics["copies"] == 2
    assert res.metrics["pruned"]["nonzero_weights"] < res.metrics["dense"]["nonzero_weights"]
    assert REGISTRY["prune-redundancy"].run is pr.run


def test_am_lens_primitives():
    from overparam.studies import am_in_networks as ain
    rng = np.random.default_rng(0)
    # isotropic data in d dims has participation ratio ~ d; rank-1 data has 1
    assert ain.participation_ratio(rng.standard_normal((4000, 10))) == pytest.approx(10, rel=0.05)
    assert ain.participation_ratio(np.outer(rng.standard_normal(100), np.ones(5))) == pytest.approx(1.0)
    # unit-length inputs, unit-variance outputs: the gain is |w|^2 / d as in overparam.memory.theory
    from overparam.memory import random_patterns
    H = random_patterns(5000, 16, seed=1)
    w = rng.standard_normal((3, 16))
    g = ain.neuron_noise_gains(w, np.zeros(3), H)
    var = (H @ w.T).var(axis=0)
    np.testing.assert_allclose(g, np.sum(w ** 2, axis=1) / (16 * var))
    x = torch.randn(4, 9) * 5
    assert torch.allclose(ain.LengthNormalize()(x).norm(dim=1), torch.full((4,), 3.0))


def test_am_in_networks_tiny():
    from overparam.studies import am_in_networks as ain
    cfg = resolve_config(ain.AmInNetworksConfig, ain.PRESETS, "quick",
                         sets={"n_train": 200, "n_test": 100, "widths": "4,8,16", "epochs": 2})
    res = ain.run(cfg, RunContext())
    assert res.arrays["plain_load"].shape == (3, 3)
    assert "am_in_networks" in res.figures
    assert REGISTRY["am-in-networks"].run is ain.run
    assert len(res.checks) == 7


def test_quick_presets_of_prune_redundancy_and_am_in_networks():
    # the tour's configurations
    from overparam.studies import am_in_networks as ain
    from overparam.studies import prune_redundancy as pr
    res = pr.run(resolve_config(pr.PruneRedundancyConfig, pr.PRESETS, "quick"), RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["the redundant copies fit in the dense budget"].passed
    assert checks["pruning keeps accuracy"].passed
    res = ain.run(resolve_config(ain.AmInNetworksConfig, ain.PRESETS, "quick"), RunContext())
    checks = {c.name: c for c in res.checks}
    assert checks["plain: wider hidden layers attenuate input noise more"].passed
    assert checks["normalized: wider hidden layers attenuate input noise more"].passed
