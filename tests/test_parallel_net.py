"""ParallelNet / ResNet1D: exact sums of subnetworks, replica independence, weights-only decay, and
active-unit counting on hand-made networks."""

import pytest
import torch
from torch import nn

from overparam.models.parallel import (ParallelNet, ResNet1D, active_blocks, active_mask, active_subnetworks,
                                       decay_groups, output_variation, weight_penalty)

X = torch.linspace(-1, 1, 64).reshape(-1, 1)


@pytest.mark.parametrize("replicas", [None, 3])
def test_parallel_net_is_the_sum_of_its_subnetworks(replicas):
    net = ParallelNet(1, 5, 4, 6, replicas=replicas, seed=0)
    for r in ([None] if replicas is None else range(replicas)):
        out = net(X) if r is None else net(X)[r]
        explicit = sum(net.subnetwork(m, r)(X) for m in range(5))
        torch.testing.assert_close(out, explicit, rtol=1e-5, atol=1e-6)
        sub = net.subnetwork_outputs(X) if r is None else net.subnetwork_outputs(X)[r]
        torch.testing.assert_close(sub[:, 2], net.subnetwork(2, r)(X))


def test_single_subnetwork_is_an_mlp_and_parameter_count_is_exact():
    net = ParallelNet(3, 1, 3, 7, out_dim=2, seed=1)
    x = torch.randn(10, 3)
    torch.testing.assert_close(net(x), net.subnetwork(0)(x))
    assert net.parameters_per_subnetwork() == sum(p.numel() for p in net.parameters())
    assert ParallelNet(3, 4, 3, 7, out_dim=2).parameters_per_subnetwork() * 4 == \
        sum(p.numel() for p in ParallelNet(3, 4, 3, 7, out_dim=2).parameters())


def test_replicas_are_independent():
    net = ParallelNet(1, 4, 3, 5, replicas=3, seed=0)
    loss = (net(X)[1] ** 2).sum()
    loss.backward()
    for p in net.parameters():
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0
        assert p.grad[1].abs().sum() > 0


def test_resnet_matches_explicit_loop():
    net = ResNet1D(1, 5, 3, replicas=2, seed=0)
    for r in range(2):
        h = X @ net.embed.weight[r].T + net.embed.bias[r]
        for b in range(3):
            branch = torch.relu(h @ net.blocks.weight1[r, b].T + net.blocks.bias1[r, b]) @ net.blocks.weight2[r, b].T \
                + net.blocks.bias2[r, b]
            torch.testing.assert_close(net.branch_outputs(X)[r, :, b], branch)
            h = h + branch
        torch.testing.assert_close(net(X)[r], h @ net.readout.weight[r].T + net.readout.bias[r])


# ------------------------------------------------------------------ weight decay: weights only

def test_penalty_and_decay_groups_exclude_biases():
    net = ParallelNet(1, 3, 3, 4, replicas=2, seed=0)
    pen = weight_penalty(net)
    expected = sum((p ** 2).flatten(1).sum(1) for n, p in net.named_parameters() if n.endswith("weight"))
    torch.testing.assert_close(pen, expected)
    pen.sum().backward()
    for n, p in net.named_parameters():
        if n.endswith("bias"):
            assert p.grad is None or p.grad.abs().max() == 0
        else:
            torch.testing.assert_close(p.grad, 2 * p.detach())
    groups = decay_groups(net, 0.1)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for n, p in net.named_parameters() if n.endswith("weight")}
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() == 3 for p in groups[1]["params"])


def test_training_with_pure_penalty_moves_weights_not_biases():
    """The study's training loop with the data term made exactly zero (a wrapper whose output ignores the
    net): only the penalty acts, so biases never move, weights of the lambda > 0 replica shrink, and the
    lambda = 0 replica stays put."""
    from overparam.studies.weight_decay_sparsity import train_penalized

    net = ParallelNet(1, 3, 3, 4, replicas=2, seed=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}

    class PenaltyOnly(nn.Module):  # wraps the net so the data term is exactly zero
        def __init__(self, inner):
            super().__init__()
            self.inner, self.replicas = inner, inner.replicas

        def forward(self, x):
            return torch.zeros(2, len(x), 1) + 0 * sum(p.sum() for p in self.inner.parameters())

    wrapped = PenaltyOnly(net)
    train_penalized(wrapped, X, torch.zeros(2, len(X)), torch.tensor([0.5, 0.0]), steps=50, lr=0.01)
    for n, p in net.named_parameters():
        if n.endswith("bias"):
            torch.testing.assert_close(p.detach(), before[n])
        else:
            assert p.detach()[0].norm() < before[n][0].norm()          # decayed replica shrinks
            torch.testing.assert_close(p.detach()[1], before[n][1])    # lambda = 0 replica untouched


# ------------------------------------------------------------------ active counting

def _zero_subnetwork(net, m):
    with torch.no_grad():
        for layer in net.layers:
            layer.weight[..., m, :, :] = 0
            layer.bias[..., m, :] = 0


def test_zeroed_subnetworks_are_inactive():
    net = ParallelNet(1, 6, 3, 8, seed=0)
    assert active_subnetworks(net, X) == 6
    for m in (1, 4):
        _zero_subnetwork(net, m)
    assert active_subnetworks(net, X) == 4


def test_dead_relu_and_constant_subnetworks_are_inactive():
    net = ParallelNet(1, 5, 3, 8, replicas=2, seed=0)
    with torch.no_grad():
        # replica 0, subnetwork 0: every first-layer unit dead on [-1, 1] (pre-activation <= -1)
        net.layers[0].weight[0, 0] = 0.5
        net.layers[0].bias[0, 0] = -2.0
        # replica 0, subnetwork 3: output weights zero but a nonzero output bias -> constant 0.7
        net.layers[-1].weight[0, 3] = 0.0
        net.layers[-1].bias[0, 3] = 0.7
        # replica 1, subnetwork 2: input weights zero -> every layer constant in x
        net.layers[0].weight[1, 2] = 0.0
    sub = net.subnetwork_outputs(X)
    assert torch.all(sub[0, :, 0] == sub[0, 0, 0]) and torch.all(sub[0, :, 3] == 0.7)
    assert active_subnetworks(net, X).tolist() == [3, 4]


def test_active_mask_tolerance_and_reference():
    var = torch.tensor([[1.0, 1e-2, 1e-4, 0.0]])
    assert active_mask(var, rtol=1e-3).tolist() == [[True, True, False, False]]
    assert active_mask(var, rtol=1e-1).tolist() == [[True, False, False, False]]
    # a collapsed net: every unit tiny compared with the data's scale -> none active
    tiny = torch.tensor([[1e-7, 5e-8]])
    assert active_mask(tiny, rtol=1e-3).tolist() == [[True, True]]
    assert active_mask(tiny, rtol=1e-3, reference=1.0).tolist() == [[False, False]]
    out = torch.tensor([[1.0], [3.0]]).reshape(2, 1, 1)
    torch.testing.assert_close(output_variation(out), torch.tensor([1.0]))


def test_active_blocks_counts_zeroed_and_constant_branches():
    net = ResNet1D(1, 6, 4, seed=0)
    assert active_blocks(net, X) == 4
    with torch.no_grad():
        net.blocks.weight2[1] = 0          # branch 1 outputs its bias: constant
        net.blocks.bias2[1] = 0.3
        net.blocks.weight1[3] = 0          # branch 3: relu of a constant -> constant
    assert active_blocks(net, X) == 2
