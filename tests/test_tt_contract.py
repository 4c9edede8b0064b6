"""The TT contraction plans: every path's output and gradients against a dense weight built entry by entry, the
cost model's counts against counted FLOPs, and auto's choice and its cache."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from overparam.models import tt_contract as tc
from overparam.models.bayes_tt import BayesianTTLinear
from overparam.models.tt import TTLinear, tt_matmul

# (in_modes, out_modes, internal ranks): unequal modes, d = 1..4, rank 1 and full rank
SHAPES = [([5], [3], []), ([2, 3], [4, 5], [1]), ([2, 3], [4, 5], [6]), ([2, 3, 4], [3, 2, 5], [3, 4]),
          ([2, 3, 2], [3, 1, 2], [1, 1]), ([3, 2, 2, 3], [2, 3, 2, 2], [2, 5, 3]),
          ([2, 2, 2, 2], [2, 2, 2, 2], [4, 16, 4])]
PLANS = [(s, p) for s in SHAPES for p in tc.candidate_plans(s[0], s[1])]


def _id(case):
    (ins, outs, ranks), plan = case
    return f"{'x'.join(map(str, ins))}->{'x'.join(map(str, outs))} r{ranks} {plan}"


def dense_weight(cores):
    """W (prod n, prod m) by one torch.einsum over all cores at once (no pairwise order, no reshape tricks);
    checked against the entry-by-entry definition in test_dense_weight_is_the_product_of_core_slices."""
    d = len(cores)
    sym = "abcdefghijklmnopqrstuvwxyz"
    ins, outs, rs = sym[:d], sym[d:2 * d], sym[2 * d:3 * d + 1]
    eq = ",".join(rs[k] + ins[k] + outs[k] + rs[k + 1] for k in range(d)) + "->" + ins + outs
    w = torch.einsum(eq, *cores)
    return w.reshape(math.prod(c.shape[1] for c in cores), math.prod(c.shape[2] for c in cores))


def test_dense_weight_is_the_product_of_core_slices():
    cores = [torch.randn(1, 2, 3, 2), torch.randn(2, 3, 1, 3), torch.randn(3, 2, 2, 1)]
    w = dense_weight(cores)
    for ii in itertools.product(range(2), range(3), range(2)):
        for jj in itertools.product(range(3), range(1), range(2)):
            v = cores[0][:, ii[0], jj[0], :] @ cores[1][:, ii[1], jj[1], :] @ cores[2][:, ii[2], jj[2], :]
            row, col = np.ravel_multi_index(ii, (2, 3, 2)), np.ravel_multi_index(jj, (3, 1, 2))
            assert float(w[row, col]) == pytest.approx(float(v[0, 0]), abs=1e-12)


@pytest.fixture(autouse=True)
def _f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    tc.clear_plan_cache()
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("case", PLANS, ids=[_id(c) for c in PLANS])
def test_every_plan_output_and_gradients_equal_the_dense_product(case):
    (in_modes, out_modes, ranks), plan = case
    layer = TTLinear(in_modes, out_modes, ranks, contraction=plan)
    params = [*layer.cores, layer.bias]
    w = dense_weight(list(layer.cores))                            # differentiable in the cores
    for lead in [(1,), (5,), (2, 3)]:                             # batch 1, > 1, extra leading dims
        x = torch.randn(*lead, layer.in_features, requires_grad=True)
        g = torch.randn(*lead, layer.out_features)
        y = layer(x)
        got = torch.autograd.grad(y, [x, *params], g)
        ref = x @ w + layer.bias
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
        want = torch.autograd.grad(ref, [x, *params], g, retain_graph=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("case", [c for c in PLANS if c[1].path != "einsum"], ids=_id)
def test_counted_flops_equal_the_models_multiply_adds(case):
    (in_modes, out_modes, ranks), plan = case
    layer = TTLinear(in_modes, out_modes, ranks, bias=False, contraction=plan)
    x = torch.randn(7, layer.in_features)
    with FlopCounterMode(display=False) as counter:
        layer(x)
    assert counter.get_total_flops() == 2 * tc.plan_macs(plan, in_modes, out_modes, layer.ranks, 7)
    if plan == tc.Plan("sequential", (1,) * len(in_modes)):     # the standard count is this plan's
        assert tc.plan_macs(plan, in_modes, out_modes, layer.ranks, 7) == layer.flops(7)


def test_einsum_plan_runs_opt_einsums_optimal_path():
    import opt_einsum

    cores = [torch.randn(1, 3, 2, 4), torch.randn(4, 2, 3, 5), torch.randn(5, 4, 2, 1)]
    shapes = [(6, 3, 2, 4), *[c.shape for c in cores]]
    path, _ = opt_einsum.contract_path(tc._einsum_equation(3), *shapes, shapes=True, optimize="optimal")
    assert tc._einsum_expression(6, tuple(tuple(c.shape) for c in cores)).contraction_list \
        == opt_einsum.contract_expression(tc._einsum_equation(3), *shapes, optimize=path).contraction_list


def test_backward_counts_one_product_per_operand_needing_a_gradient():
    plan = tc.Plan("dense", (2,))
    args = ([2, 3], [4, 5], [1, 3, 1], 7)
    fwd = tc.plan_counts(plan, *args)
    train = tc.plan_counts(plan, *args, train=True)
    train_x = tc.plan_counts(plan, *args, train=True, input_grad=True)
    merge, gemm = 2 * 4 * 3 * 3 * 5, 7 * 6 * 20
    assert fwd.macs == merge + gemm
    assert train.macs == 3 * merge + 2 * gemm          # merge: both operands are cores; x needs no gradient
    assert train_x.macs == 3 * merge + 3 * gemm


# ------------------------------------------------------------------------------------------------ the choice
def test_auto_picks_the_least_predicted_time_and_caches_per_key():
    modes, ranks = [4, 8, 4, 8], [1, 4, 4, 4, 1]
    for batch, train, input_grad in itertools.product((1, 32, 256, 1024), (False, True), (False, True)):
        plans = tc.candidate_plans(modes, modes)
        costs = [tc.plan_cost(p, modes, modes, ranks, batch, train, input_grad) for p in plans]
        chosen = tc.choose_plan(modes, modes, ranks, batch, "auto", train, input_grad, threads=1)
        assert chosen == plans[int(np.argmin(costs))]
    info = tc._choose.cache_info()
    assert info.currsize == 16 and info.misses == 16
    tc.choose_plan(modes, modes, ranks, 256, "auto", True, False, threads=1)
    assert tc._choose.cache_info().hits == info.hits + 1
    # every part of the key is a new entry: batch, path, gradient, threads, device, dtype
    for kwargs in ({"batch": 255}, {"contraction": "dense"}, {"threads": 2}, {"device": "cuda"},
                   {"dtype": "torch.float64"}):
        key = {"batch": 256, "contraction": "auto", "train": True, "threads": 1, **kwargs}
        tc.choose_plan(modes, modes, ranks, **key)
    assert tc._choose.cache_info().currsize == 21


def test_the_model_prefers_few_kernels_at_batch_1_and_one_gemm_at_full_rank_and_large_batch():
    modes = [4, 8, 4, 8]
    low = tc.choose_plan(modes, modes, [1, 4, 4, 4, 1], 1, threads=1)
    assert low.path != "dense"
    full = tc.choose_plan(modes, modes, [1, 16, 256, 16, 1], 1024, threads=1)
    assert full.path == "dense"
    # a forced path gets that path's best plan
    for path in tc.PATHS:
        assert tc.choose_plan(modes, modes, [1, 4, 4, 4, 1], 256, path, threads=1).path == path


def test_forward_runs_the_plan_chosen_for_its_batch_and_gradient_mode(monkeypatch):
    layer = TTLinear([2, 3, 4], [3, 2, 5], [3, 4])
    seen = []
    run = tc.run_plan
    monkeypatch.setattr(tc, "run_plan", lambda plan, x, cores: seen.append(plan) or run(plan, x, cores))
    x = torch.randn(4, 6, 24)
    layer(x)                                                       # parameters need grad: a training plan
    with torch.no_grad():
        layer(x)
    layer(x.requires_grad_())
    assert seen == [layer.plan(24, train=True), layer.plan(24), layer.plan(24, train=True, input_grad=True)]
    layer.contraction = plan = tc.Plan("grouped", (2, 1), True)
    layer(x)
    assert seen[-1] == plan == layer.plan(1)


def test_bad_contraction_names_the_choices():
    with pytest.raises(ValueError, match="auto, sequential, grouped, einsum, dense"):
        TTLinear([2, 3], [3, 2], 2, contraction="fast")
    with pytest.raises(ValueError, match="contraction"):
        BayesianTTLinear([2, 3], [3, 2], 2, contraction="fast")
    with pytest.raises(ValueError, match="at least 3 cores"):
        TTLinear([2, 3], [3, 2], 2, contraction="grouped")(torch.randn(2, 6))


@pytest.mark.parametrize("path", tc.PATHS)
def test_every_path_works_under_vmap(path):
    shapes = [(1, 2, 3, 2), (2, 3, 2, 3), (3, 2, 2, 1)]
    stacked = [torch.randn(4, *s) for s in shapes]                 # 4 replicas of the cores
    x = torch.randn(5, 12)
    out = torch.func.vmap(lambda *cs: tt_matmul(x, cs, path))(*stacked)
    for r in range(4):
        torch.testing.assert_close(out[r], x @ dense_weight([c[r] for c in stacked]), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------ Bayesian layer
@pytest.mark.parametrize("plan", tc.candidate_plans([2, 3, 2], [3, 2, 2]), ids=str)
def test_bayesian_sampled_cores_every_plan_equals_the_dense_product(plan):
    layer = BayesianTTLinear([2, 3, 2], [3, 2, 2], [1, 3, 2, 1], contraction=plan).double()
    x = torch.randn(5, 12)
    g = torch.randn(5, 12)
    torch.manual_seed(7)
    layer(x).backward(g)
    got = [p.grad.clone() for p in (*layer.means, *layer.log_sigmas, layer.bias)]
    layer.zero_grad()
    torch.manual_seed(7)
    cores = layer.sample_cores()                                   # the same draw
    ref = x @ dense_weight(cores) + layer.bias
    ref.backward(g)
    want = [p.grad for p in (*layer.means, *layer.log_sigmas, layer.bias)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    torch.manual_seed(7)
    torch.testing.assert_close(layer(x), ref)
    assert math.prod(layer.in_modes) == 12
