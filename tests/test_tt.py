"""TTLinear: the forward contraction, TT-SVD, counts and gradients, against exact answers on small cases."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from overparam.models.tt import TTLinear, factorize, tt_flops, tt_svd_matrix

CASES = [([5], [3], []), ([2, 3], [4, 5], [3]), ([2, 3, 4], [3, 2, 5], [3, 4]), ([4, 2, 2, 3], [2, 3, 2, 2], [2, 5, 3])]


@pytest.fixture(autouse=True)
def _f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("in_modes,out_modes,ranks", CASES)
def test_forward_equals_dense_product(in_modes, out_modes, ranks):
    layer = TTLinear(in_modes, out_modes, ranks)
    x = torch.randn(3, 4, math.prod(in_modes))
    y = layer(x)
    assert y.shape == (3, 4, math.prod(out_modes))
    torch.testing.assert_close(y, x @ layer.full_weight() + layer.bias, rtol=1e-12, atol=1e-12)
    no_bias = TTLinear(in_modes, out_modes, ranks, bias=False)
    assert no_bias.bias is None
    torch.testing.assert_close(no_bias(x[0]), x[0] @ no_bias.full_weight(), rtol=1e-12, atol=1e-12)


def test_full_weight_entry_is_a_product_of_core_slices():
    layer = TTLinear([2, 3, 2], [3, 2, 2], [2, 3])
    w = layer.full_weight()
    for (i, j) in [((1, 2, 0), (2, 1, 1)), ((0, 0, 1), (0, 1, 0))]:
        prod = torch.eye(1)
        for k, core in enumerate(layer.cores):
            prod = prod @ core[:, i[k], j[k], :]
        row = np.ravel_multi_index(i, (2, 3, 2))
        col = np.ravel_multi_index(j, (3, 2, 2))
        assert float(w[row, col]) == pytest.approx(float(prod[0, 0]), abs=1e-12)


def test_ranks_attribute_shapes_and_clipping():
    layer = TTLinear([2, 3, 4], [3, 2, 5], 100)
    # maxima: min(6, 6*20)=6, min(36, 20)=20
    assert layer.ranks == [1, 6, 20, 1]
    assert [tuple(c.shape) for c in layer.cores] == [(1, 2, 3, 6), (6, 3, 2, 20), (20, 4, 5, 1)]
    assert isinstance(layer.cores, nn.ParameterList)
    assert TTLinear([2, 3, 4], [3, 2, 5], [1, 2, 3, 1]).ranks == [1, 2, 3, 1]
    with pytest.raises(ValueError):
        TTLinear([2, 3], [3], 2)
    with pytest.raises(ValueError):
        TTLinear([2, 3], [3, 2], [2, 2])
    with pytest.raises(ValueError):
        TTLinear([2, 3], [3, 2], 2, init="nope")


def test_parameter_and_flop_counts_by_hand():
    layer = TTLinear([2, 3], [4, 5], [3])
    # cores 1*2*4*3 + 3*3*5*1 = 24 + 45, bias 20
    assert layer.parameter_count() == 24 + 45 + 20 == sum(p.numel() for p in layer.parameters())
    assert layer.dense_parameter_count() == 6 * 20 + 20
    # step 1: (batch) * prod(n_2)=3 * r0 n1 m1 r1 = 3 * 24 = 72; step 2: prod(m_1)=4 * 3*3*5 = 180
    assert layer.flops() == 72 + 180
    assert layer.flops(batch=10) == 2520
    assert layer.dense_flops(batch=10) == 10 * 120
    big = TTLinear([4, 8, 4, 8], [4, 8, 4, 8], 4)
    # 4*4*4 + 4*8*8*4 + 4*4*4*4 + 4*8*8 = 64 + 1024 + 256 + 256 = 1600 cores + 1024 bias
    assert big.parameter_count() == 1600 + 1024
    assert tt_flops([4, 8, 4, 8], [4, 8, 4, 8], big.ranks) == big.flops()


@pytest.mark.parametrize("in_modes,out_modes,ranks", CASES[1:])
def test_flops_equal_counted_matmul_flops_of_the_sequential_contraction(in_modes, out_modes, ranks):
    layer = TTLinear(in_modes, out_modes, ranks, bias=False, contraction="sequential")
    layer.contraction = layer.plan(7)
    assert layer.contraction.path == "sequential" and not layer.contraction.reverse
    x = torch.randn(7, math.prod(in_modes))
    with FlopCounterMode(display=False) as counter:
        layer(x)
    assert counter.get_total_flops() == 2 * layer.flops(batch=7)  # torch counts a multiply-add as 2


def test_gradient_reaches_every_core():
    layer = TTLinear([2, 3, 4], [3, 2, 5], [3, 4])
    layer(torch.randn(6, 24)).pow(2).sum().backward()
    for core in layer.cores:
        assert core.grad is not None and core.grad.abs().sum() > 0
    assert layer.bias.grad is not None
    # the gradient equals the one through the dense weight (chain rule check)
    x = torch.randn(5, 24)
    layer.zero_grad()
    (layer(x) ** 3).sum().backward()
    auto = [c.grad.clone() for c in layer.cores]
    layer.zero_grad()
    w = layer.full_weight()
    ((x @ w + layer.bias) ** 3).sum().backward()
    for a, c in zip(auto, layer.cores):
        torch.testing.assert_close(a, c.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_modes,out_modes,_", CASES)
def test_tt_svd_full_rank_is_exact(in_modes, out_modes, _):
    lin = nn.Linear(math.prod(in_modes), math.prod(out_modes))
    tt = TTLinear.from_linear(lin, in_modes, out_modes, None)
    torch.testing.assert_close(tt.full_weight(), lin.weight.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(tt.bias, lin.bias)
    x = torch.randn(4, lin.in_features)
    torch.testing.assert_close(tt(x), lin(x), rtol=1e-12, atol=1e-12)
    assert all(t < 1e-20 for t in tt.svd_tail)


def test_truncated_tt_svd_error_obeys_the_bound():
    torch.manual_seed(1)
    lin = nn.Linear(48, 60)
    in_modes, out_modes = [4, 3, 4], [3, 5, 4]
    for r in (1, 2, 4, 8):
        tt = TTLinear.from_linear(lin, in_modes, out_modes, r)
        err = float((tt.full_weight() - lin.weight.T).norm())
        tail = tt.svd_tail
        # Oseledets 2011 Thm 2.2: err^2 <= sum of discarded squared singular values over the steps;
        # and err^2 >= the best rank-r_1 error of the first unfolding, which step 1 discards exactly.
        assert tail[0] - 1e-9 <= err ** 2 <= sum(tail) + 1e-9
    # d = 2: TT-SVD is the truncated SVD of the reshaped matrix, so the bound is an equality (Eckart-Young)
    tt = TTLinear.from_linear(lin, [6, 8], [6, 10], 5)
    err = float((tt.full_weight() - lin.weight.T).norm())
    assert err ** 2 == pytest.approx(sum(tt.svd_tail), rel=1e-9)


def test_tt_svd_matches_tensorly():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import tensor_train_matrix
    w = torch.randn(24, 30)
    in_modes, out_modes = [2, 3, 4], [3, 2, 5]
    cores, _ = tt_svd_matrix(w, in_modes, out_modes, [3, 4])
    tt = TTLinear(in_modes, out_modes, [3, 4], bias=False)
    with torch.no_grad():
        for p, c in zip(tt.cores, cores):
            p.copy_(c)
    ref = tensor_train_matrix(w.numpy().reshape(*in_modes, *out_modes), [1, 3, 4, 1])
    ref_w = tl.tt_matrix_to_tensor(ref).reshape(24, 30)
    np.testing.assert_allclose(tt.full_weight().detach().numpy(), ref_w, atol=1e-10)


def test_from_linear_keeps_dtype_and_rejects_bad_modes():
    lin = nn.Linear(12, 6).float()
    tt = TTLinear.from_linear(lin, [3, 4], [2, 3], 2)
    assert all(c.dtype == torch.float32 for c in tt.cores)
    assert tt.ranks == [1, 2, 1]
    with pytest.raises(ValueError):
        TTLinear.from_linear(lin, [3, 5], [2, 3], 2)


def test_init_matches_linear_variance():
    for init, target in (("linear", 1 / (3 * 256)), ("he", 2 / 256), ("xavier", 2 / (256 + 64))):
        layer = TTLinear([4, 8, 8], [4, 4, 4], 8, init=init)
        var = float(layer.full_weight().var())
        assert 0.5 * target < var < 2.0 * target, (init, var, target)


def test_factorize():
    assert factorize(1024, 4) == [8, 8, 4, 4]
    assert factorize(40, 2) == [8, 5]
    assert factorize(64, 3) == [4, 4, 4]
    assert factorize(7, 2) == [7, 1]
    assert factorize(10, 1) == [10]
    for n, d in ((360, 3), (256, 4), (96, 2)):
        f = factorize(n, d)
        assert math.prod(f) == n and len(f) == d
        assert max(f) == min(max(a, n // a) for a in range(1, n + 1) if n % a == 0) or d != 2
    with pytest.raises(ValueError):
        factorize(0, 2)


def test_functional_matmul_under_vmap_matches_per_replica():
    from overparam.models.tt import tt_matmul, tt_to_matrix
    shapes = [(1, 2, 3, 2), (2, 3, 2, 3), (3, 2, 2, 1)]
    stacked = [torch.randn(4, *s) for s in shapes]             # 4 replicas of the cores
    x = torch.randn(5, 12)
    out = torch.func.vmap(lambda *cs: tt_matmul(x, cs))(*stacked)
    for r in range(4):
        cores = [c[r] for c in stacked]
        torch.testing.assert_close(out[r], x @ tt_to_matrix(cores), rtol=1e-12, atol=1e-12)
