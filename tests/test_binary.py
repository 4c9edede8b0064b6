"""BinaryLinear (BinaryConnect): forward values, straight-through gradients, clipping, and the quasi network."""

import math

import pytest
import torch

from overparam.measure.ntk import ntk_gram
from overparam.models import MLP, seeded
from overparam.models.binary import (
    BinaryLinear,
    QuasiNetwork,
    binarize,
    binary_mlp,
    clip_binary_,
    relu_moments,
)
from overparam.train import TrainConfig, train


def layer(mode="sign", **kw):
    lin = seeded(lambda: BinaryLinear(5, 3, mode=mode, **kw), seed=0)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.3, -0.2, 0.0, 1.5, -0.7]] * 3) * torch.tensor([[1.0], [-1.0], [0.5]]))
    return lin


def test_sign_forward_values():
    lin = layer("sign", auto_clip=False)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    wb = torch.where(lin.weight >= 0, 1.0, -1.0)
    torch.testing.assert_close(lin(x), x @ wb.T / math.sqrt(5) + lin.bias)
    assert set(binarize(lin.weight).unique().tolist()) <= {-1.0, 1.0}
    lin.eval()
    torch.testing.assert_close(lin(x), x @ wb.T / math.sqrt(5) + lin.bias)


def test_stochastic_rounding_mean_and_variance():
    w = torch.linspace(-1.2, 1.2, 13)
    g = torch.Generator().manual_seed(0)
    draws = binarize(w.expand(20000, 13), "stochastic", generator=g)
    assert set(draws.unique().tolist()) == {-1.0, 1.0}
    expected = w.clamp(-1, 1)  # E[w_b] = 2·hard_sigmoid(w) − 1
    assert (draws.mean(0) - expected).abs().max() < 0.03
    assert (draws.var(0) - (1 - expected ** 2)).abs().max() < 0.03


def test_seeded_stochastic_layer_is_reproducible():
    a, b = layer("stochastic", seed=3), layer("stochastic", seed=3)
    x = torch.ones(2, 5)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))


@pytest.mark.parametrize("mode", ["sign", "stochastic"])
def test_straight_through_gradient_identity(mode):
    lin = layer(mode, ste="identity", auto_clip=False, seed=0)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    gy = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
    (lin(x) * gy).sum().backward()
    # the gradient of a linear layer whose weight were the identity function of w (times the scale)
    torch.testing.assert_close(lin.weight.grad, gy.T @ x / math.sqrt(5))
    torch.testing.assert_close(lin.bias.grad, gy.sum(0))


def test_straight_through_gradient_clipped_masks_large_weights():
    lin = layer("sign", ste="clipped", auto_clip=False)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    gy = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
    (lin(x) * gy).sum().backward()
    mask = (lin.weight.abs() <= 1).float()
    assert mask.min() == 0  # the 1.5 entries
    torch.testing.assert_close(lin.weight.grad, gy.T @ x / math.sqrt(5) * mask)


def test_forward_mode_and_vmap_agree_with_backward():
    lin = layer("sign", ste="clipped", auto_clip=False)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(5))
    p = {"weight": lin.weight.detach(), "bias": lin.bias.detach()}
    f = lambda q: torch.func.functional_call(lin, q, (x,))  # noqa: E731
    jr = torch.func.jacrev(f)(p)
    jf = torch.func.jacfwd(f)(p)
    torch.testing.assert_close(jr["weight"], jf["weight"])
    k = ntk_gram(lin, x, dtype=torch.float64)  # vmap(jacrev) through the autograd.Function
    assert k.gram.shape == (4, 4)


def test_clipping_method_and_auto_clip_in_training():
    lin = layer("sign", auto_clip=False)
    lin.clip_()
    assert lin.weight.abs().max() <= 1.0
    net = seeded(lambda: binary_mlp(4, [16], 3, mode="stochastic", seed=0), seed=1)
    with torch.no_grad():
        net.layers[0].weight.mul_(3.0)
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    hist = train(net, X, y, TrainConfig(optimizer="adam", lr=0.5, epochs=3, batch_size=16))
    net.train()
    net(X)  # the clip after the last step happens at the next training forward
    assert not hist.diverged
    assert all(layer.weight.abs().max() <= 1.0 for layer in net.layers)
    with torch.no_grad():
        net.layers[1].weight.fill_(2.0)
    clip_binary_(net)
    assert net.layers[1].weight.max() == 1.0


def test_layer_moments_are_exact_for_stochastic_rounding():
    lin = layer("stochastic", seed=0)
    lin.clip_()
    mu = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    m, v = lin.moments(mu, None)
    g = torch.Generator().manual_seed(5)
    wb = binarize(lin.weight.detach().expand(20000, 3, 5), "stochastic", generator=g)  # 20000 draws at once
    outs = lin.scale * torch.einsum("ni,kji->knj", mu, wb) + lin.bias.detach()
    assert (outs.mean(0) - m).abs().max() < 0.03
    assert ((outs.var(0) - v).abs() / (v + 1e-3)).max() < 0.08


def test_relu_moments_match_monte_carlo_and_limit():
    m = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    var = torch.tensor([0.5, 1.0, 0.2, 3.0])
    z = m + var.sqrt() * torch.randn(400000, 4, generator=torch.Generator().manual_seed(0))
    e, v = relu_moments(m, var)
    torch.testing.assert_close(e, z.relu().mean(0), atol=0.01, rtol=0.01)
    torch.testing.assert_close(v, z.relu().var(0), atol=0.02, rtol=0.02)
    e0, v0 = relu_moments(m, torch.zeros(4))
    torch.testing.assert_close(e0, m.relu())
    torch.testing.assert_close(v0, torch.zeros(4))


def test_quasi_network_of_real_mode_is_the_plain_network_and_shares_parameters():
    net = seeded(lambda: binary_mlp(6, [20, 20], 3, mode="real"), seed=2)
    net.eval()
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    q = QuasiNetwork(net)
    torch.testing.assert_close(q(x), net(x), atol=1e-5, rtol=1e-5)
    assert [n for n, _ in q.named_parameters()] == ["net." + n for n, _ in net.named_parameters()]
    # equal to an ordinary MLP whose weights are scale · w (the NTK parameterization)
    mlp = MLP(6, [20, 20], 3)
    with torch.no_grad():
        for lin, bl in zip([m for m in mlp.net if isinstance(m, torch.nn.Linear)], net.layers):
            lin.weight.copy_(bl.scale * bl.weight.clamp(-1, 1))
            lin.bias.copy_(bl.bias)
    torch.testing.assert_close(mlp(x), net(x), atol=1e-5, rtol=1e-5)


def test_quasi_network_mean_tracks_sampled_binary_networks():
    net = seeded(lambda: binary_mlp(10, [200], 2, mode="stochastic", seed=0), seed=4)
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mc = torch.stack([net(x) for _ in range(4000)]).mean(0)
        quasi = QuasiNetwork(net)(x)
    assert (mc - quasi).abs().max() < 0.05
    k = ntk_gram(QuasiNetwork(net), x, dtype=torch.float64).gram
    assert torch.linalg.eigvalsh(k).min() > -1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        BinaryLinear(3, 2, mode="ternary")
    with pytest.raises(ValueError, match="ste"):
        BinaryLinear(3, 2, ste="tanh")
    with pytest.raises(ValueError, match="scale"):
        BinaryLinear(3, 2, scale=-1.0)
