"""Geometry instruments (sharpness, interpolate, landscape, generalization measures) against exact answers."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from overparam.measure.interpolate import interpolate
from overparam.measure.sharpness import FlatLoss, pacbayes_sigma, sharpness


class Quadratic(nn.Module):
    """L(w) = 1/2 (w - c)^T H (w - c) through a model whose output is its weight vector."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64).clone())

    def forward(self, x):
        return self.w.expand(len(x), -1)


def quad_loss(H, c):
    H, c = torch.as_tensor(H, dtype=torch.float64), torch.as_tensor(c, dtype=torch.float64)

    def loss(out, y):
        d = out - c
        return 0.5 * ((d @ H) * d).sum(1).mean()
    return loss


def _data(n=3):
    return torch.ones(n, 1, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------- sharpness
@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_sharpness_of_diagonal_quadratic_is_its_closed_form(eps):
    rng = np.random.default_rng(1)
    w = rng.normal(size=12) * 3
    h = rng.uniform(0.5, 5.0, size=12)
    res = sharpness(Quadratic(w), quad_loss(np.diag(h), w), _data(), eps=eps, hessian=True, pacbayes=False)
    exact = 0.5 * np.sum(h * (eps * (np.abs(w) + 1)) ** 2)          # the max is at a corner of the box
    assert res.loss == pytest.approx(0.0, abs=1e-14)
    assert res.max_loss == pytest.approx(exact, rel=1e-8)
    assert res.sharpness == pytest.approx(100 * exact, rel=1e-8)
    assert res.at_bound == 1.0
    assert res.top_eigenvalue == pytest.approx(h.max(), rel=1e-8)
    assert res.n_loss_evals > 1 and res.seconds > 0


def test_sharpness_normalizes_by_one_plus_loss():
    w, h = np.array([1.0, -2.0]), np.array([2.0, 1.0])
    c = w + np.array([0.5, 0.0])   # L(w) = 1/2 * 2 * 0.25 = 0.25; the max pushes delta_0 away from c
    eps = 0.01
    res = sharpness(Quadratic(w), quad_loss(np.diag(h), c), _data(), eps=eps, hessian=False, pacbayes=False)
    b = eps * (np.abs(w) + 1)
    max_loss = 0.5 * (h[0] * (0.5 + b[0]) ** 2 + h[1] * b[1] ** 2)
    assert res.loss == pytest.approx(0.25)
    assert res.max_loss == pytest.approx(max_loss, rel=1e-10)
    assert res.sharpness == pytest.approx(100 * (max_loss - 0.25) / 1.25, rel=1e-8)


def test_sharpness_in_a_random_subspace_matches_closed_form():
    rng = np.random.default_rng(2)
    w, h, eps, seed = rng.normal(size=8), rng.uniform(1, 3, size=8), 0.05, 7
    res = sharpness(Quadratic(w), quad_loss(np.diag(h), w), _data(), eps=eps, subspace=1, seed=seed,
                    hessian=False, pacbayes=False)
    A = np.random.default_rng(seed).standard_normal((8, 1))      # the instrument's draw (first from its rng)
    b = eps * (abs(np.linalg.pinv(A) @ w)[0] + 1)
    exact = 0.5 * float(A[:, 0] @ (h * A[:, 0])) * b ** 2
    assert res.subspace == 1
    assert res.max_loss == pytest.approx(exact, rel=1e-8)


def test_sharpness_of_coupled_quadratic_never_exceeds_the_best_corner():
    # a convex quadratic's max over a box is at one of its 2^P corners: enumerate them (P = 6)
    import itertools
    rng = np.random.default_rng(4)
    w, eps = rng.normal(size=6), 0.1
    M = rng.normal(size=(6, 6))
    H = M @ M.T
    b = eps * (np.abs(w) + 1)
    best = max(0.5 * (np.array(s) * b) @ H @ (np.array(s) * b) for s in itertools.product((-1, 1), repeat=6))
    res = sharpness(Quadratic(w), quad_loss(H, w), _data(), eps=eps, hessian=False, pacbayes=False)
    assert res.max_loss <= best * (1 + 1e-10)
    assert res.max_loss >= 0.5 * best                     # a local max at a corner, from a random start
    assert res.at_bound == 1.0


def test_sharpness_does_not_modify_the_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    before = copy.deepcopy(net.state_dict())
    X, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    res = sharpness(net, "cross_entropy", (X, y), eps=1e-3, maxiter=5,
                    pacbayes_kw={"n_samples": 3, "n_bisect": 6})
    assert res.sharpness >= 0 and res.top_eigenvalue > 0 and res.pacbayes.sigma > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training


def test_pacbayes_sigma_of_quadratic_matches_expected_rise():
    # E[L(w + u)] - L(w) = 1/2 sum_i h_i sigma^2 for u ~ N(0, sigma^2 I) at a minimum; tolerance t gives
    # sigma = sqrt(2 t / sum h) (Monte Carlo error shrinks with the samples)
    h = np.full(400, 1.0)
    w = np.zeros(400)
    res = pacbayes_sigma(Quadratic(w), quad_loss(np.diag(h), w), _data(1), magnitude=False, tolerance=0.1,
                         n_samples=20, n_bisect=30, seed=0)
    assert res.sigma == pytest.approx(np.sqrt(2 * 0.1 / h.sum()), rel=0.03)
    assert res.flatness == pytest.approx(1 / res.sigma ** 2)
    assert res.deviation <= 0.1


# ------------------------------------------------------------------------------------------------- interpolate
class Scalar(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(w)]))

    def forward(self, x):
        return self.w * x


def double_well(out, y):
    return ((out ** 2 - 1) ** 2).mean()     # minima at w = -1 and w = 1, value 1 at w = 0


def test_interpolate_known_barrier():
    X, y = torch.ones(4, 1), torch.zeros(4)
    res = interpolate(Scalar(-1.0), Scalar(1.0), double_well, (X, y), steps=21, extend=0.5)
    assert res.alphas[0] == pytest.approx(-0.5) and res.alphas[-1] == pytest.approx(1.5)
    assert np.any(np.isclose(res.alphas, 0)) and np.any(np.isclose(res.alphas, 1))
    assert res.loss_barrier == pytest.approx(1.0, abs=1e-12)
    assert res.barrier_alpha == pytest.approx(0.5)
    w = -1 + 2 * res.alphas
    np.testing.assert_allclose(res.loss, (w ** 2 - 1) ** 2, atol=1e-12)
    assert np.all(np.isnan(res.error))
    assert res.distance == pytest.approx(2.0)


def test_interpolate_barrier_subtracts_the_chord():
    # L(w) = w^2 from w=0 to w=2: L(alpha) = 4 alpha^2 lies under the chord 4 alpha: no barrier
    X, y = torch.ones(2, 1), torch.zeros(2)
    res = interpolate(Scalar(0.0), Scalar(2.0), lambda o, t: (o ** 2).mean(), (X, y), steps=11, extend=0)
    assert res.loss_barrier == pytest.approx(0.0, abs=1e-12)
    assert len(res.alphas) == 11


def test_interpolate_model_with_itself_is_flat():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    net.train()
    with torch.no_grad():
        net(X)                                             # non-trivial running statistics
    for bn in ("interpolate", "recompute"):
        res = interpolate(net, copy.deepcopy(net), "cross_entropy", (X, y), steps=5, extend=0.5, bn=bn)
        if bn == "interpolate":
            assert np.ptp(res.loss) < 1e-12 and np.ptp(res.error) == 0
            assert abs(res.loss_barrier) < 1e-12 and res.error_barrier == 0
        else:
            assert abs(res.loss_barrier) < 1e-12             # every alpha is the same network
    assert net.training


def test_interpolate_interpolates_bn_buffers():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[1].running_mean.fill_(2.0)
    X = torch.randn(5, 2)
    res = interpolate(a, b, lambda o, t: o.mean(), (X, torch.zeros(5)), steps=3, extend=0)
    # output mean is linear in the running mean: (x - rm) / sqrt(rv + eps) * 1 + 0
    a.eval()
    with torch.no_grad():
        m0 = a(X).mean().item()
    sd = torch.sqrt(a[1].running_var + a[1].eps)
    expected = [m0 - float((alpha * 2.0 / sd).mean()) for alpha in (0, 0.5, 1)]
    np.testing.assert_allclose(res.loss, expected, rtol=1e-5)


def test_interpolate_refuses_different_architectures():
    with pytest.raises(ValueError, match="differ"):
        interpolate(nn.Linear(2, 3), nn.Linear(3, 3), "mse", (torch.randn(4, 2), torch.randn(4, 3)))


def test_flat_loss_streams_like_full_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    X, y = torch.randn(50, 3), torch.randint(0, 3, (50,))
    full = FlatLoss(net, "cross_entropy", (X, y), batch_size=100)
    small = FlatLoss(net, "cross_entropy", (X, y), batch_size=7)
    l1, e1 = full(full.w0, error=True)
    l2, e2 = small(small.w0, error=True)
    assert l1 == pytest.approx(l2, rel=1e-12) and e1 == e2
    g1, g2 = full.loss_and_grad(full.w0)[1], small.loss_and_grad(small.w0)[1]
    torch.testing.assert_close(g1, g2)


# ------------------------------------------------------------------------------------------------- landscape
from overparam.measure.landscape import filter_normalized_direction, landscape  # noqa: E402


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _conv_data(n=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 2, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_filter_normalization_matches_filter_norms_and_zeroes_bias_bn():
    torch.manual_seed(0)
    net = ConvNet()
    f = FlatLoss(net, "cross_entropy", _conv_data())
    d = filter_normalized_direction(f, torch.Generator().manual_seed(0))
    pieces = dict(zip(f.names, (t.view(s) for t, s in zip(torch.split(d, f.sizes), f.shapes))))
    for name, p in net.named_parameters():
        if p.dim() <= 1:
            assert torch.count_nonzero(pieces[name]) == 0, name          # conv.bias, bn.weight, bn.bias, fc.bias
        else:
            dn = pieces[name].reshape(p.shape[0], -1).norm(dim=1)
            wn = p.detach().double().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-9, atol=1e-12)   # each filter / row: its weights' norm
    d2 = filter_normalized_direction(f, torch.Generator().manual_seed(0), ignore=None)
    pieces2 = dict(zip(f.names, (t.view(s) for t, s in zip(torch.split(d2, f.sizes), f.shapes))))
    torch.testing.assert_close(pieces2["bn.weight"], net.bn.weight.detach().double())


def test_landscape_center_equals_model_loss_and_grid_shapes():
    torch.manual_seed(0)
    net = ConvNet()
    X, y = _conv_data()
    net.train()
    with torch.no_grad():
        net(X)
    net.eval()
    with torch.no_grad():
        own = nn.functional.cross_entropy(net(X), y).item()
    net.train()
    r1 = landscape(net, "cross_entropy", (X, y), dims=1, steps=7, span=0.5)
    r2 = landscape(net, "cross_entropy", (X, y), dims=2, steps=5, span=0.5, seed=1)
    assert r1.loss.shape == (7,) and r2.loss.shape == (5, 5) and r2.error.shape == (5, 5)
    assert r1.loss[3] == pytest.approx(own, rel=1e-5) and r2.loss[2, 2] == pytest.approx(own, rel=1e-5)
    assert r1.center_loss == pytest.approx(r1.loss[3], rel=1e-14)
    assert r1.loss.max() > r1.loss[3]            # moving along a random direction raises the loss somewhere
    assert net.training
    assert r1.plot() is not None and r2.plot() is not None


def test_landscape_along_given_direction_is_the_quadratic():
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    H = rng.normal(size=(5, 5))
    H = H @ H.T
    d = rng.normal(size=5)
    r = landscape(Quadratic(w), quad_loss(H, w), _data(), dims=1, directions=[d], span=2.0, steps=9)
    np.testing.assert_allclose(r.loss, 0.5 * r.alphas ** 2 * (d @ H @ d), rtol=1e-12, atol=1e-14)
    e = rng.normal(size=5)
    r2 = landscape(Quadratic(w), quad_loss(H, w), _data(), dims=2, directions=[{"w": torch.tensor(d)}, e], steps=5)
    a, b = np.meshgrid(r2.alphas, r2.betas, indexing="ij")
    Q = lambda u, v: u @ H @ v  # noqa: E731
    np.testing.assert_allclose(r2.loss, 0.5 * (a ** 2 * Q(d, d) + 2 * a * b * Q(d, e) + b ** 2 * Q(e, e)),
                               rtol=1e-12, atol=1e-14)


def test_landscape_random_directions_are_seeded_and_bias_free():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    data = (torch.randn(10, 3), torch.randint(0, 2, (10,)))
    a = landscape(net, "cross_entropy", data, directions="random", steps=3, seed=5)
    b = landscape(net, "cross_entropy", data, directions="random", steps=3, seed=5)
    np.testing.assert_array_equal(a.directions[0], b.directions[0])
    assert np.all(a.directions[0][12:16] == 0) and np.all(a.directions[0][-2:] == 0)   # the two biases
    with pytest.raises(ValueError, match="directions"):
        landscape(net, "cross_entropy", data, directions="sideways")
    with pytest.raises(ValueError, match="entries"):
        landscape(net, "cross_entropy", data, directions=[np.ones(3)])


# ------------------------------------------------------------------------------------------------- generalization
import itertools  # noqa: E402

from overparam.measure.generalization import generalization_measures, path_norm, linear_layers  # noqa: E402
from overparam.models import MLP, seeded  # noqa: E402


def _trained_mlp(bias=True):
    net = seeded(lambda: MLP(5, [8, 8], 3, bias=bias), 0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net, X, y


def test_path_norm_equals_sum_over_paths():
    net = seeded(lambda: MLP(2, [3, 2], 2, bias=False), 1)
    W1, W2, W3 = (m.weight.detach().double() for m in linear_layers(net))
    brute = sum(float(W1[j, i] ** 2 * W2[k, j] ** 2 * W3[o, k] ** 2)
                for i, j, k, o in itertools.product(range(2), range(3), range(2), range(2)))
    assert path_norm(linear_layers(net)) == pytest.approx(brute, rel=1e-12)
    # with biases: a bias of layer l starts paths from layer l on
    nb = seeded(lambda: MLP(2, [3], 2), 2)
    (A, a), (B, b) = ((m.weight.detach().double(), m.bias.detach().double()) for m in linear_layers(nb))
    expect = float(((B ** 2) @ ((A ** 2).sum(1) + a ** 2) + b ** 2).sum())
    assert path_norm(linear_layers(nb)) == pytest.approx(expect, rel=1e-12)


def test_margin_norms_and_relu_rescaling_invariance():
    net, X, y = _trained_mlp()
    res = generalization_measures(net, (X, y), pacbayes=False)
    out = net(X).detach().double()
    marg = np.array([out[i, y[i]] - max(out[i, j] for j in range(3) if j != y[i]) for i in range(60)])
    np.testing.assert_allclose(res.margins, marg, rtol=1e-6)
    assert res["margin"] == pytest.approx(np.sort(marg)[5], rel=1e-6)          # the 6th smallest of 60
    Ws = [m.weight.detach().double().numpy() for m in linear_layers(net)]
    assert res["log_prod_of_spec"] == pytest.approx(sum(np.log(np.linalg.norm(w, 2) ** 2) for w in Ws))
    assert res["param_norm"] == pytest.approx(sum((w ** 2).sum() for w in Ws))

    c = 3.0
    scaled = copy.deepcopy(net)
    L = linear_layers(scaled)
    with torch.no_grad():
        L[0].weight.mul_(c)
        L[0].bias.mul_(c)
        L[1].weight.div_(c)
    torch.testing.assert_close(scaled(X), net(X), rtol=1e-5, atol=1e-5)           # same function
    res2 = generalization_measures(scaled, (X, y), pacbayes=False)
    invariant = ["path_norm", "margin", "inverse_margin", "log_prod_of_fro", "log_sum_of_fro", "log_prod_of_spec",
                 "log_sum_of_spec", "fro_over_spec", "log_spec_orig_main", "log_prod_of_spec_over_margin",
                 "log_sum_of_spec_over_margin", "log_prod_of_fro_over_margin", "log_sum_of_fro_over_margin",
                 "path_norm_over_margin"]
    for k in invariant:
        assert res2[k] == pytest.approx(res[k], rel=1e-5), k
    assert res2["param_norm"] > 1.5 * res["param_norm"] or res2["param_norm"] < res["param_norm"] / 1.5


def test_pacbayes_measures_and_distances_to_init():
    net, X, y = _trained_mlp()
    init = seeded(lambda: MLP(5, [8, 8], 3), 0)
    res = generalization_measures(net, (X, y), init_model=init, pacbayes_kw={"n_samples": 3, "n_bisect": 8})
    M = res.measures
    assert M["pacbayes_flatness"] == pytest.approx(1 / res.sigma.sigma ** 2)
    assert M["pacbayes_mag_flatness"] == pytest.approx(1 / res.mag_sigma.sigma ** 2)
    assert res.sigma.deviation <= 0.1 and res.mag_sigma.deviation <= 0.1
    s = res.sigma.sigma
    w = torch.cat([p.detach().double().reshape(-1) for p in net.parameters()])
    assert M["pacbayes_orig"] == pytest.approx(float(w.norm() ** 2) / (4 * s * s) + np.log(60 / s) + 10)
    assert M["fro_dist"] > 0 and M["l2_dist"] > 0 and "pacbayes_mag_init" in M
    rescaled = generalization_measures(net, (X, y), init_model=net, pacbayes=False)
    assert rescaled["fro_dist"] == 0 and rescaled["l2_dist"] == 0


def test_generalization_measures_refuse_non_mlp():
    with pytest.raises(ValueError, match="MLP"):
        generalization_measures(ConvNet(), _conv_data(), pacbayes=False)


def test_instruments_accept_a_dataloader():
    from torch.utils.data import DataLoader, TensorDataset
    net, X, y = _trained_mlp()
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    a = sharpness(net, "cross_entropy", (X, y), maxiter=3, hessian=False, pacbayes=False)
    b = sharpness(net, "cross_entropy", loader, maxiter=3, hessian=False, pacbayes=False)
    assert a.sharpness == pytest.approx(b.sharpness, rel=1e-8)
    la = landscape(net, "cross_entropy", loader, steps=3)
    assert la.center_loss == pytest.approx(a.loss, rel=1e-10)
    ga, gb = generalization_measures(net, (X, y), pacbayes=False), generalization_measures(net, loader, pacbayes=False)
    assert ga["margin"] == pytest.approx(gb["margin"], rel=1e-10) and gb.n_examples == 60
